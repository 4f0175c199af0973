"""Decoupled MeanFlow (DMF, arXiv 2510.24474; github:kyungmnlee/dmf): the released flow maps, sampled
by the official Euler sampler.

`model` holds the network (the official ``DMFT``: SiT's DiT with a second time for its last
blocks), its sampler and `build`. This module registers ``DMFT_models``' patch-2 sizes as
generate.py builds them (``use_cfg_embedding=True``, ``dmf_depth`` 2/3 of the depth, 20 for
XL as the eval scripts), and the 512 px XL/2 (``qk_norm``, shift 1.5). Parameter counts equal
the official module's, ``pos_embed`` included, and SiT's.

Example::

    >>> from adapters import model_info
    >>> info = model_info("dmf-xl2")
    >>> info.params, info.nfe, info.sample_shape, info.image_size
    (675111184, 1, (4, 32, 32), 256)
"""

from dataclasses import replace
from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.dmf.model import FAMILY, DMFConfig, build
from adapters.vae import SD_VAE_DECODER

INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

_SAMPLER = "1 Euler step of the average velocity by default (num_steps=k, guidance, guidance_interval, shift)"
XL2 = DMFConfig(hidden_size=1152, depth=28, num_heads=16, dmf_depth=20)
SIZES = {
    "dmf-b2": Size(DMFConfig(), f"DMF-B/2 (~130.5M, dmf_depth 8): {_SAMPLER}"),  # depth 12, width 768, 12 heads
    "dmf-l2": Size(DMFConfig(hidden_size=1024, depth=24, num_heads=16, dmf_depth=16),
                   f"DMF-L/2 (~458.1M, dmf_depth 16): {_SAMPLER}"),
    "dmf-xl2": Size(XL2, f"DMF-XL/2 (~675.1M, dmf_depth 20), loads the released dmf_xl_2_256.pt (FID 2.16 at "
                         f"1 NFE): {_SAMPLER}"),
    "dmf-xl2-512": Size(replace(XL2, input_size=64, qk_norm=True, shift=1.5),
                        f"DMF-XL/2 at 512 px (~676.0M, qk_norm, shift 1.5), loads the released dmf_xl_2_512.pt "
                        f"(FID 2.12 at 1 NFE): {_SAMPLER}"),
}
register_sizes(SIZES, family=FAMILY, build=build, decoder=SD_VAE_DECODER, infos=INFOS)
