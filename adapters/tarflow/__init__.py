"""TARFlow (apple/ml-tarflow) and iTARFlow (BiFlow's latent teacher): one family, many configs.

`config` holds `TARFlowConfig`; `network` the torch network (state_dict-compatible with
apple/ml-tarflow) and its decoding passes; `sampler` the sampler (sequential, Jacobi and
Gauss-Seidel-Jacobi decoding, guidance, denoising) and the registry's builder; `guidance`
what both backends share of guidance; `gsjacobi` the parallel-decoding schedules and plans;
`jax_network` and `jax_port` the Flax port (network and conversion, decoding loops); `train`
the maximum-likelihood objective of the mini track. This module registers the size variants
from one table.
"""

from pathlib import Path

from adapters.api.registry import Size, register_sizes
from adapters.tarflow.config import TARFlowConfig
from adapters.tarflow.sampler import FAMILY, build
from adapters.vae import SD_VAE_DECODER

INFOS = Path(__file__).with_name("infos.json")  # ModelInfo of each id, for `nfebench list`

# Pixel-space TARFlow (Zhai et al., arXiv 2412.06329), named P-Ch-T-K-sigma in the paper;
# configs from the apple/ml-tarflow README. AFHQ has 3 classes (cat, dog, wild).
TARFLOW_AFHQ256 = TARFlowConfig(img_size=256, in_channels=3, patch_size=8, channels=768, num_blocks=8,
                                layers_per_block=8, num_classes=3, noise_std=0.07)
TARFLOW_IMAGENET64 = TARFlowConfig(img_size=64, in_channels=3, patch_size=2, channels=768, num_blocks=8,
                                   layers_per_block=8, num_classes=1000, noise_std=0.05)
TARFLOW_IMAGENET128 = TARFlowConfig(img_size=128, in_channels=3, patch_size=4, channels=1024, num_blocks=8,
                                    layers_per_block=8, num_classes=1000, noise_std=0.15)

# iTARFlow as BiFlow uses it: 32x32x4 SD-VAE latent, patch 2 -> 256 tokens of width 16.
# BiFlow publishes only the sizes (B/2 about 120M, XL/2 about 690M parameters), not depth or
# width, nor the clip value c or the noise sigma. Our choices, with head dim 64 and MLP x4:
#   B/2:  width 768 (DiT-B's), 8 blocks x 2 layers  -> 121.4M parameters (+1.2%);
#   XL/2: width 1152 (DiT-XL's), 6 blocks x 7 layers -> 678.5M parameters (-1.7%);
#         8 blocks cannot reach 690M at width 1152 within 3% (5 layers: 649.6M, 6: 777.2M).
# c = 3 bounds each token's scale to exp(+-3) and its shift to +-3, which still covers
# latents scaled to unit variance; sigma = 0.1 is a placeholder. Override both (affine_clip=,
# noise_std=) to match real weights.
_ITARFLOW = dict(img_size=32, in_channels=4, patch_size=2, num_classes=1000, noise_std=0.1,
                 affine_clip=3.0, space="latent", image_size=256)
ITARFLOW_B2 = TARFlowConfig(channels=768, num_blocks=8, layers_per_block=2, **_ITARFLOW)
ITARFLOW_XL2 = TARFlowConfig(channels=1152, num_blocks=6, layers_per_block=7, **_ITARFLOW)
# The mini track's teacher (harness/track.py): 8x8 RGB digits in pixel space, trained on a CPU.
TARFLOW_MINI = TARFlowConfig(img_size=8, in_channels=3, patch_size=2, channels=64, head_dim=32, num_blocks=4,
                             layers_per_block=2, num_classes=10, noise_std=0.1, space="pixel")

SIZES = {
    "tarflow": Size(TARFlowConfig(), "TARFlow with every config field overridable (defaults: ImageNet64 P2-768-8-8)"),
    "tarflow-afhq256": Size(TARFLOW_AFHQ256, "TARFlow AFHQ 256px, P8-768-8-8, sigma 0.07 (released weights: "
                                             "afhq_model_8_768_8_8_0.07.pth)"),
    "tarflow-imagenet64": Size(TARFLOW_IMAGENET64, "TARFlow conditional ImageNet 64px, P2-768-8-8, sigma 0.05"),
    "tarflow-imagenet128": Size(TARFLOW_IMAGENET128, "TARFlow conditional ImageNet 128px, P4-1024-8-8, sigma 0.15"),
    "itarflow-b2": Size(ITARFLOW_B2, "iTARFlow-B/2 (BiFlow's forward model) on the SD-VAE latent, about 120M "
                                     "parameters"),
    "itarflow-xl2": Size(ITARFLOW_XL2, "iTARFlow-XL/2 on the SD-VAE latent, about 690M parameters"),
    "tarflow-mini": Size(TARFLOW_MINI, "mini track: pixel TARFlow teacher on 8x8 digits, P2-64-4-2, sigma 0.1 (~0.4M)"),
}
register_sizes(SIZES, family=FAMILY, build=build, jax_port="adapters.tarflow.jax_port",
               trainer="adapters.tarflow.train:trainable", decoding_plan="adapters.tarflow.gsjacobi:planned_setting",
               decoder=SD_VAE_DECODER, infos=INFOS)
