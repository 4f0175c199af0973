"""improved MeanFlow (iMF, arXiv 2512.02012): the released ``iMF-*-2.pth`` checkpoints load unchanged.

`model` holds the network (state_dict-compatible with github:Lyy-iiis/imeanflow, branch
``torch``) and its k-step sampler, `jax_port` the Flax port. This module registers the
sizes of the reference's ``imfDiT_B_2`` ... ``imfDiT_XL_2``, with the guidance defaults of
its README's evaluation commands as (num_steps, omega, t_min, t_max); nfebench's guidance
is g = omega - 1.

Example::

    >>> from adapters import model_info
    >>> info = model_info("imf-b2")
    >>> info.params, info.nfe, info.sample_shape, info.image_size
    (88948256, 1, (4, 32, 32), 256)
"""

from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.imf.model import FAMILY, IMFConfig, build
from adapters.vae import SD_VAE_DECODER

INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

SIZES = {
    "imf-b2": Size(IMFConfig(hidden_size=768, depth=12, num_heads=12, reference_settings=((1, 8.0, 0.4, 0.65),)),
                   "iMF-B/2 (88.9M), 1 step, omega 8.0 on [0.4, 0.65] (released iMF-B-2.pth, FID 3.39)"),
    "imf-m2": Size(IMFConfig(hidden_size=768, depth=24, num_heads=12, reference_settings=((1, 10.5, 0.4, 0.6),)),
                   "iMF-M/2 (173.9M), 1 step, omega 10.5 on [0.4, 0.6] (released iMF-M-2.pth, FID 2.27)"),
    "imf-l2": Size(IMFConfig(hidden_size=1024, depth=32, num_heads=16, reference_settings=((1, 10.5, 0.4, 0.6),)),
                   "iMF-L/2 (409.1M), 1 step, omega 10.5 on [0.4, 0.6] (released iMF-L-2.pth, FID 1.86)"),
    "imf-xl2": Size(IMFConfig(hidden_size=1024, depth=48, num_heads=16,
                              reference_settings=((1, 8.0, 0.42, 0.62), (2, 4.0, 0.36, 0.64))),
                    "iMF-XL/2 (610.4M), 1 step, omega 8.0 on [0.42, 0.62]; num_steps=2: omega 4.0 on "
                    "[0.36, 0.64] (released iMF-XL-2.pth, FID 1.72 / 1.54)"),
}
register_sizes(SIZES, family=FAMILY, build=build, jax_port="adapters.imf.jax_port", decoder=SD_VAE_DECODER,
               infos=INFOS)
