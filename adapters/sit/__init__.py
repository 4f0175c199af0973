"""SiT (github:willisma/SiT): the released Rectified Flow checkpoints, sampled by SiT's ODE.

`model` holds the sampler and `build` (the network is `adapters.flowmatch.model.DiT` with raw
times), `jax_port` the Flax port. This module registers SiT's ``SiT_models`` of patch 2.
Parameter counts are without SiT's learned-sigma output rows, which nothing samples from
(`model.learned_sigma_params` more in SiT's own module).
"""

from adapters.registry import register
from adapters.sit.model import FAMILY, SiTConfig, build

JAX_PORT = "adapters.sit.jax_port"

SIT_B2 = SiTConfig()  # SiT-B/2: depth 12, width 768, 12 heads
SIT_L2 = SiTConfig(hidden_size=1024, depth=24, num_heads=16)  # SiT-L/2
SIT_XL2 = SiTConfig(hidden_size=1152, depth=28, num_heads=16)  # SiT-XL/2, the released SiT-XL-2-256x256.pt

_SAMPLER = ("k Euler (or solver=heun) steps of SiT's ODE from noise, 1 step by default (the one-step "
            "rectified-flow baseline); SiT's published context is 250 steps with guidance")
register("sit-b2", family=FAMILY, config=SIT_B2, build=build, jax_port=JAX_PORT,
         description=f"SiT-B/2 (~130.5M): {_SAMPLER}")
register("sit-l2", family=FAMILY, config=SIT_L2, build=build, jax_port=JAX_PORT,
         description=f"SiT-L/2 (~458.1M): {_SAMPLER}")
register("sit-xl2", family=FAMILY, config=SIT_XL2, build=build, jax_port=JAX_PORT,
         description=f"SiT-XL/2 (~675.1M), loads the released SiT-XL-2-256x256.pt: {_SAMPLER}")
