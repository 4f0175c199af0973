"""Rectified Flow and MeanFlow on a DiT backbone: nfebench's own reconstructions (no released
checkpoint loads into them), and the mini track's one-step Rectified Flow, ``rf-mini``.

The ImageNet Rectified Flow baselines are SiT's released checkpoints (``sit-b2``, ``sit-xl2``
in adapters/sit, the same DiT with SiT's time convention); the look-alikes ``rf-b2`` and
``rf-xl2`` that stood here before them were retired. The sampler here stays for models
trained with this module's convention (x_t = (1 - t) x0 + t noise), such as ``rf-mini``.

`model` holds the DiT and both samplers, `jax_port` the Flax port, `train` the
flow-matching objective. This module registers the size variants.
"""

from adapters.flowmatch.model import FlowMatchConfig, build_meanflow, build_rectified_flow
from adapters.registry import register

JAX_PORT = "adapters.flowmatch.jax_port"

B2 = FlowMatchConfig()  # DiT-B/2: depth 12, width 768, 12 heads
XL2 = FlowMatchConfig(hidden_size=1152, depth=28, num_heads=16)  # DiT-XL/2

register("meanflow-b2", family="meanflow", config=B2, build=build_meanflow, jax_port=JAX_PORT,
         description="MeanFlow-B/2 (~131M), one step x0 = x1 - u(x1, 0, 1), arXiv 2505.13447")
register("meanflow-xl2", family="meanflow", config=XL2, build=build_meanflow, jax_port=JAX_PORT,
         description="MeanFlow-XL/2 (~676M), one step x0 = x1 - u(x1, 0, 1), arXiv 2505.13447")

# The mini track (harness/track.py): a one-step Rectified Flow baseline on 8x8 RGB digits in pixel space.
RF_MINI = FlowMatchConfig(hidden_size=64, depth=4, num_heads=2, input_size=8, in_channels=3, num_classes=10,
                          space="pixel")
register("rf-mini", family="rectified-flow", config=RF_MINI, build=build_rectified_flow, jax_port=JAX_PORT,
         description="mini track: Rectified Flow on 8x8 digits, DiT 64x4 (~0.4M), 1 Euler step")
