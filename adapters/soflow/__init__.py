"""SoFlow (github:zlab-princeton/SoFlow, arXiv 2512.15657): the released ImageNet 256 "cond" checkpoints.

`model` holds the sampler and `build` (the network is `adapters.flowmatch.model.DiT` with
two times and raw t). This module registers the CFG-trained "cond" rows of the reference's
readme (``Soflow(model_type="DiT-B-4" | ... | "DiT-XL-2", cfg_drop_rate=0.1)``, sizes as
models.py builds them), with readme.md's FID-50K at 1 / 2 NFE in each description.

SoFlow-B/4 "uncond" is not registered: its config.yaml (cfg_drop_rate 0, a label table
without the null row) is in the Hugging Face repository only, not in the reference code.

Example::

    >>> from adapters import model_info
    >>> info = model_info("soflow-b2")
    >>> info.params, info.nfe, info.sample_shape, info.image_size
    (131288080, 1, (4, 32, 32), 256)
"""

from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.soflow.model import FAMILY, SoFlowConfig, build
from adapters.vae import SD_VAE_DECODER

INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

_SAMPLER = "1 step by default; num_steps=k jumps to data k times, re-noising between jumps (NFE k)"
SIZES = {
    "soflow-b4": Size(SoFlowConfig(patch_size=4),  # width 768, 12 blocks, 12 heads
                      f"SoFlow-B/4 (131.2M), released B-4-cond: {_SAMPLER} (FID-50K 11.59 / 8.22 at 1 / 2 NFE)"),
    "soflow-b2": Size(SoFlowConfig(),
                      f"SoFlow-B/2 (131.3M), released B-2-cond: {_SAMPLER} (FID-50K 4.85 / 4.24 at 1 / 2 NFE)"),
    "soflow-m2": Size(SoFlowConfig(hidden_size=1024, depth=16, num_heads=16),
                      f"SoFlow-M/2 (308.3M), released M-2-cond: {_SAMPLER} (FID-50K 3.73 / 3.42 at 1 / 2 NFE)"),
    "soflow-l2": Size(SoFlowConfig(hidden_size=1024, depth=24, num_heads=16),
                      f"SoFlow-L/2 (459.4M), released L-2-cond: {_SAMPLER} (FID-50K 3.20 / 2.90 at 1 / 2 NFE)"),
    "soflow-xl2": Size(SoFlowConfig(hidden_size=1152, depth=28, num_heads=16),
                       f"SoFlow-XL/2 (676.7M), released XL-2-cond/ckpts/1200000.pt: {_SAMPLER} "
                       f"(FID-50K 2.96 / 2.66 at 1 / 2 NFE)"),
}
register_sizes(SIZES, family=FAMILY, build=build, decoder=SD_VAE_DECODER, infos=INFOS)
