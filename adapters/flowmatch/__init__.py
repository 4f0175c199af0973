"""Rectified Flow on a DiT backbone: the mini track's one-step baseline, ``rf-mini``, and the DiT
that SiT, SoFlow, DMF and the official MeanFlow build on.

The ImageNet Rectified Flow baselines are SiT's released checkpoints (``sit-b2``, ``sit-xl2``
in adapters/sit, the same DiT with SiT's time convention); the look-alikes ``rf-b2`` and
``rf-xl2`` that stood here before them were retired, and so were the MeanFlow
reconstructions ``meanflow-b2`` / ``meanflow-xl2``, whose ids are now the official MeanFlow's
(adapters/meanflow). The sampler here stays for models trained with this module's convention
(x_t = (1 - t) x0 + t noise), such as ``rf-mini``.

`model` holds the DiT and the sampler, `jax_port` the Flax port, `train` the flow-matching
objective. This module registers the size table.
"""

from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.flowmatch.model import FAMILY, FlowMatchConfig, build_rectified_flow
from adapters.vae import SD_VAE_DECODER

JAX_PORT = "adapters.flowmatch.jax_port"
INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

# The mini track (harness/track.py): a one-step Rectified Flow baseline on 8x8 RGB digits in pixel space.
RECTIFIED_FLOW_SIZES = {
    "rf-mini": Size(FlowMatchConfig(hidden_size=64, depth=4, num_heads=2, input_size=8, in_channels=3, num_classes=10,
                                    space="pixel"),
                    "mini track: Rectified Flow on 8x8 digits, DiT 64x4 (~0.4M), 1 Euler step"),
}
register_sizes(RECTIFIED_FLOW_SIZES, family=FAMILY, build=build_rectified_flow, jax_port=JAX_PORT,
               trainer="adapters.flowmatch.train:trainable", decoder=SD_VAE_DECODER, infos=INFOS)
