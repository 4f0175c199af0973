"""pixel MeanFlow (pMF, arXiv 2601.22158): the released ``pMF-*.pt`` checkpoints load, in pixel space.

`model` holds the network (iMF's, with a bottleneck patch embedding, learned positions and
x-prediction; state_dict-compatible with github:Lyy-iiis/pMF, branch ``torch``), `jax_port`
the Flax port. This module registers the reference's ``pmfDiT_*`` sizes: /16 at 256 px and
/32 at 512 px, each with its noise scale (``pmf.py``) and the guidance defaults of the
README's evaluation commands as (num_steps, omega, t_min, t_max); nfebench's guidance is
g = omega - 1. pMF-B/16's command gives no flags, so its row is ``evaluate.py``'s defaults.

Example::

    >>> from adapters import model_info
    >>> info = model_info("pmf-b16")
    >>> info.params, info.space, info.sample_shape, info.image_size
    (118234240, 'pixel', (3, 256, 256), 256)
"""

from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.pmf.model import FAMILY, PMFConfig, build

INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

_B = dict(hidden_size=768, depth=16, num_heads=12, bottleneck_channels=128)
_L = dict(hidden_size=1024, depth=32, num_heads=16, bottleneck_channels=128)
_H = dict(hidden_size=1280, depth=48, num_heads=16, bottleneck_channels=256)
_256 = dict(input_size=256, patch_size=16)
_512 = dict(input_size=512, patch_size=32)

SIZES = {
    "pmf-b16": Size(PMFConfig(**_B, **_256, noise_scale=1.0, reference_settings=((1, 7.5, 0.1, 0.8),)),
                    "pMF-B/16 (118.2M), 256 px, omega 7.5 on [0.1, 0.8], noise x1 (released pMF-B-16.pt, FID 3.12)"),
    "pmf-l16": Size(PMFConfig(**_L, **_256, noise_scale=1.0, reference_settings=((1, 7.0, 0.2, 0.7),)),
                    "pMF-L/16 (410.3M), 256 px, omega 7.0 on [0.2, 0.7], noise x1 (released pMF-L-16.pt, FID 2.52)"),
    "pmf-h16": Size(PMFConfig(**_H, **_256, noise_scale=2.0, reference_settings=((1, 7.0, 0.2, 0.6),)),
                    "pMF-H/16 (955.5M), 256 px, omega 7.0 on [0.2, 0.6], noise x2 (released pMF-H-16.pt, FID 2.22)"),
    "pmf-b32": Size(PMFConfig(**_B, **_512, noise_scale=2.0, reference_settings=((1, 6.5, 0.1, 0.7),)),
                    "pMF-B/32 (120.3M), 512 px, omega 6.5 on [0.1, 0.7], noise x2 (released pMF-B-32.pt, FID 3.70)"),
    "pmf-l32": Size(PMFConfig(**_L, **_512, noise_scale=4.0, reference_settings=((1, 7.5, 0.2, 0.6),)),
                    "pMF-L/32 (413.0M), 512 px, omega 7.5 on [0.2, 0.6], noise x4 (released pMF-L-32.pt, FID 2.75)"),
    "pmf-h32": Size(PMFConfig(**_H, **_512, noise_scale=4.0, reference_settings=((1, 5.5, 0.1, 0.6),)),
                    "pMF-H/32 (959.1M), 512 px, omega 5.5 on [0.1, 0.6], noise x4 (released pMF-H-32.pt, FID 2.48)"),
}
# Pixel space: no decoder.
register_sizes(SIZES, family=FAMILY, build=build, jax_port="adapters.pmf.jax_port", infos=INFOS)
