"""Rectified Flow and MeanFlow on a DiT backbone: nfebench's own reconstructions (no released
checkpoint loads into them), and the mini track's one-step Rectified Flow, ``rf-mini``.

The ImageNet Rectified Flow baselines are SiT's released checkpoints (``sit-b2``, ``sit-xl2``
in adapters/sit, the same DiT with SiT's time convention); the look-alikes ``rf-b2`` and
``rf-xl2`` that stood here before them were retired. The sampler here stays for models
trained with this module's convention (x_t = (1 - t) x0 + t noise), such as ``rf-mini``.

`model` holds the DiT and both samplers, `jax_port` the Flax port, `train` the
flow-matching objective. This module registers the size variants, one table per family.
"""

from adapters.api.registry import Size, register_sizes
from adapters.flowmatch.model import (
    FlowMatchConfig,
    build_meanflow,
    build_rectified_flow,
)
from adapters.vae import SD_VAE_DECODER

JAX_PORT = "adapters.flowmatch.jax_port"

MEANFLOW_SIZES = {
    "meanflow-b2": Size(FlowMatchConfig(),  # DiT-B/2: depth 12, width 768, 12 heads
                        "MeanFlow-B/2 (~131M), one step x0 = x1 - u(x1, 0, 1), arXiv 2505.13447"),
    "meanflow-xl2": Size(FlowMatchConfig(hidden_size=1152, depth=28, num_heads=16),  # DiT-XL/2
                         "MeanFlow-XL/2 (~676M), one step x0 = x1 - u(x1, 0, 1), arXiv 2505.13447"),
}
# The mini track (harness/track.py): a one-step Rectified Flow baseline on 8x8 RGB digits in pixel space.
RECTIFIED_FLOW_SIZES = {
    "rf-mini": Size(FlowMatchConfig(hidden_size=64, depth=4, num_heads=2, input_size=8, in_channels=3, num_classes=10,
                                    space="pixel"),
                    "mini track: Rectified Flow on 8x8 digits, DiT 64x4 (~0.4M), 1 Euler step"),
}
register_sizes(MEANFLOW_SIZES, family="meanflow", build=build_meanflow, jax_port=JAX_PORT, decoder=SD_VAE_DECODER)
register_sizes(RECTIFIED_FLOW_SIZES, family="rectified-flow", build=build_rectified_flow, jax_port=JAX_PORT,
               trainer="adapters.flowmatch.train:trainable", decoder=SD_VAE_DECODER)
