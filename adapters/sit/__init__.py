"""SiT (github:willisma/SiT): the released Rectified Flow checkpoints, sampled by SiT's ODE.

`model` holds the sampler and `build` (the network is `adapters.flowmatch.model.DiT` with raw
times), `jax_port` the Flax port. This module registers SiT's ``SiT_models`` of patch 2.
Parameter counts are without SiT's learned-sigma output rows, which nothing samples from
(`model.learned_sigma_params` more in SiT's own module).
"""

from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.sit.model import FAMILY, SiTConfig, build
from adapters.vae import SD_VAE_DECODER

INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

_SAMPLER = ("k Euler (or solver=heun) steps of SiT's ODE from noise, 1 step by default (the one-step "
            "rectified-flow baseline); SiT's published context is 250 steps with guidance")
SIZES = {
    "sit-b2": Size(SiTConfig(), f"SiT-B/2 (~130.5M): {_SAMPLER}"),  # depth 12, width 768, 12 heads
    "sit-l2": Size(SiTConfig(hidden_size=1024, depth=24, num_heads=16), f"SiT-L/2 (~458.1M): {_SAMPLER}"),
    "sit-xl2": Size(SiTConfig(hidden_size=1152, depth=28, num_heads=16),
                    f"SiT-XL/2 (~675.1M), loads the released SiT-XL-2-256x256.pt: {_SAMPLER}"),
}
register_sizes(SIZES, family=FAMILY, build=build, jax_port="adapters.sit.jax_port", decoder=SD_VAE_DECODER,
               infos=INFOS)
