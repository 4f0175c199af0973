"""BiFlow's one-pass reverse model (arXiv 2512.10953), a reconstruction from the paper.

`model` holds the network and sampler, `jax_port` the Flax port, `train` the distillation
from a frozen TARFlow teacher (the mini track). This module registers the size variants;
each BiFlow's stages follow the flow blocks of its iTARFlow teacher.
"""

from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.biflow.model import FAMILY, BiFlowConfig, build
from adapters.tarflow import ITARFLOW_XL2, TARFLOW_MINI
from adapters.vae import SD_VAE_DECODER

INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

SIZES = {
    # width 768, 12 trunk blocks + 1 denoising block, stages = iTARFlow-B/2 blocks
    "biflow-b2": Size(BiFlowConfig(),
                      "BiFlow reverse model B/2 (~136M, paper 133M): one pass per image, guidance as an input"),
    "biflow-xl2": Size(BiFlowConfig(hidden_size=1152, depth=28, num_heads=16, num_stages=ITARFLOW_XL2.num_blocks),
                       "BiFlow reverse model XL/2 (~688M, our sizing): one pass per image, guidance as an input"),
    # The mini track's student (harness/track.py): one stage per flow block of its teacher, tarflow-mini.
    "biflow-mini": Size(BiFlowConfig(hidden_size=64, depth=4, num_heads=2, num_stages=TARFLOW_MINI.num_blocks,
                                     input_size=8, in_channels=3, num_classes=10, space="pixel"),
                        "mini track: BiFlow student of tarflow-mini on 8x8 digits, one pass (~0.4M)"),
}
register_sizes(SIZES, family=FAMILY, build=build, jax_port="adapters.biflow.jax_port",
               trainer="adapters.biflow.train:trainable", decoder=SD_VAE_DECODER, infos=INFOS)
