"""MeanFlow, official (github:Gsunshine/meanflow, arXiv 2505.13447): the released MF-B/4 and the
paper's DiT sizes, sampled as its ``generate`` samples.

`model` holds the config, the sampler and `build` (the network is `adapters.flowmatch.model.DiT`
with two times, raw t and computed positions), `checkpoint` the mapping of the official Orbax
TrainState onto it, `jax_port` the Flax port. This module registers ``models_dit``'s sizes as
``MeanFlow(model_str=...)`` builds them: ``DiT_B_4`` (configs/run_b4.yml, the released
checkpoint) and the paper's Table 2 sizes ``DiT_B_2``, ``DiT_M_2``, ``DiT_L_2``, ``DiT_XL_2``
(no checkpoint released: random weights unless one is given). Parameter counts equal the
official module's (positions are computed, not parameters).

Example::

    >>> from adapters import model_info
    >>> info = model_info("meanflow-b4")
    >>> info.params, info.nfe, info.sample_shape, info.image_size
    (131165248, 1, (4, 32, 32), 256)
"""

from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.meanflow.model import FAMILY, MeanFlowConfig, build
from adapters.vae import SD_VAE_DECODER

INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

_SAMPLER = "1 step z - u(z, t=1, h=1) by default, num_steps=k on linspace(1, 0, k+1); guidance trained in"
SIZES = {
    "meanflow-b4": Size(MeanFlowConfig(patch_size=4),  # DiT_B_4: width 768, 12 blocks, 12 heads, 64 tokens
                        f"MeanFlow-B/4 (131.2M), loads the released MF-B/4 Orbax checkpoint: {_SAMPLER} "
                        f"(FID-50K 11.4 at 1 NFE, README)"),
    "meanflow-b2": Size(MeanFlowConfig(),  # DiT_B_2
                        f"MeanFlow-B/2 (131.1M), no released checkpoint: {_SAMPLER} (Table 2: FID 6.17 at 1 NFE)"),
    "meanflow-m2": Size(MeanFlowConfig(hidden_size=1024, depth=16, num_heads=16),  # DiT_M_2
                        f"MeanFlow-M/2 (308.0M), no released checkpoint: {_SAMPLER} (Table 2: FID 5.01 at 1 NFE)"),
    "meanflow-l2": Size(MeanFlowConfig(hidden_size=1024, depth=24, num_heads=16),  # DiT_L_2
                        f"MeanFlow-L/2 (459.1M), no released checkpoint: {_SAMPLER} (Table 2: FID 3.84 at 1 NFE)"),
    "meanflow-xl2": Size(MeanFlowConfig(hidden_size=1152, depth=28, num_heads=16),  # DiT_XL_2
                         f"MeanFlow-XL/2 (676.4M), no released checkpoint: {_SAMPLER} "
                         f"(Table 2: FID 3.43 at 1 NFE, 2.93 at 2)"),
}
register_sizes(SIZES, family=FAMILY, build=build, jax_port="adapters.meanflow.jax_port", decoder=SD_VAE_DECODER,
               infos=INFOS)
