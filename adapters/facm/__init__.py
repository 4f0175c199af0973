"""FACM (github:ali-vilab/FACM, arXiv 2507.03738): LightningDiT-XL/1 on VA-VAE latents, one or two steps.

`network` holds LightningDiT, `model` the sampler and `build`, `vavae` the VA-VAE decoder.
This module registers ``facm-xl1``, the network of the released ``100ep-stg2.pt``,
``250ep-stg2.pt`` and ``400ep-stg2.pt`` (one architecture; their README's FIDs in the
description), decoded by the VA-VAE, whose cost (`VA_VAE_DECODER`) the timing tables count.

Example::

    >>> from adapters import model_info
    >>> info = model_info("facm-xl1")
    >>> info.params, info.nfe, info.sample_shape, info.image_size
    (675260768, 1, (32, 16, 16), 256)
"""

from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.facm.model import FAMILY, FACMConfig, build
from adapters.facm.vavae import VA_VAE_DECODER

INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

SIZES = {
    "facm-xl1": Size(FACMConfig(),  # depth 28, width 1152, 16 heads, patch 1 on 32x16x16
                     "FACM LightningDiT-XL/1 (675.3M) on the VA-VAE (f16d32): 1 step by default, num_steps=k re-noises "
                     "between jumps; released 400ep-stg2 / 250ep-stg2 (FID-50K 1.70 / 1.76 at 1 step), "
                     "100ep-stg2 (1.32 at num_steps=2)"),
}
register_sizes(SIZES, family=FAMILY, build=build, decoder=VA_VAE_DECODER, infos=INFOS)
