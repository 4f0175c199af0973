"""BiFlow's reverse model G (arXiv 2512.10953): noise -> clean SD-VAE latent in one pass.

No official code or weights exist, so this is our reading of the paper, with every
choice it leaves open stated here:

- A ViT over the 256 tokens of the 4x32x32 latent (patch 2, token width 16, the same
  `patchify` layout as the iTARFlow teacher), with bidirectional attention.
- "Modern components": RMSNorm, SwiGLU MLP (hidden width 2/3 * 4D, so the MLP costs what
  a 4D GELU MLP does), qk-norm, no qkv bias, and axial 2-D RoPE as the only position
  signal (no absolute position table).
- Conditioning: class embedding (with a null row for labels=None) plus the guidance scale
  embedded like a DiT timestep (sinusoid then MLP), summed and fed to adaLN-Zero
  modulation in every trunk block. Guidance is an input, so any scale costs one pass.
- Stages: the trunk's `depth` blocks are grouped into `num_stages` consecutive stages,
  one per flow block of the teacher (iTARFlow's `num_blocks`); when `depth` is not a
  multiple the first stages take one block more. Stage k's output (N, T, D) is meant to
  align with the teacher's trajectory state after undoing its block B-1-k (stage 0 is
  nearest the noise, the last stage nearest the data), through `AlignmentHeads`, which
  are training-only and not part of the sampler or of `ModelInfo.params`.
- Learned denoising: an extra plain (unmodulated) transformer block, an RMSNorm and a
  linear head to the clean latent's tokens, replacing TARFlow's score-based step.

Sizes. ``biflow-b2``: width 768, 12 trunk blocks, 12 heads, plus the denoising block:
136.2M parameters, 2.4% above the paper's 133M (12 DiT-B-sized adaLN blocks are 127.4M
by themselves, so a B/2 trunk with one extra block cannot land much closer).
``biflow-xl2``: width 1152, 28 trunk blocks, 16 heads (DiT-XL/2's shape, as BiFlow's
sizes follow DiT's naming) plus the denoising block: 688.0M, next to the XL/2 models it
is compared with (DiT-XL/2 675M, iTARFlow-XL/2 690M); the paper gives no XL figure.

Initialisation: adaLN-Zero as in DiT (each trunk block starts as the identity), but the
output head is xavier-initialised rather than zeroed, so a random-init G maps different
noise to different latents instead of all to zero, which would make FID's covariance
singular. Random-init samples are still noise-like, not images.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from adapters.api.checkpoint import CheckpointRef
from adapters.api.config import option
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, check_guidance, check_space
from adapters.base import TorchSampler, check_guided_labels, check_patch_grid
from adapters.builder import build_sampler, sample_fields
from adapters.layers import (
    LabelEmbedder,
    RMSNorm,
    TimestepEmbedder,
    TransformerBlock,
    init_linear_xavier,
    patchify,
    rope_2d_tables,
    unpatchify,
    zero_adaln,
)
from adapters.tarflow import (
    ITARFLOW_B2,  # BiFlow-B/2's stages are its teacher's flow blocks
)

FAMILY = "biflow"


def stage_sizes(depth: int, num_stages: int) -> list[int]:
    """Blocks per stage: `depth` split into `num_stages` consecutive groups, the first
    `depth % num_stages` one block larger. ``stage_sizes(12, 8) == [2, 2, 2, 2, 1, 1, 1, 1]``."""
    if not 1 <= num_stages <= depth:
        raise InputError(f"num_stages must lie in [1, depth={depth}], got {num_stages}")
    base, extra = divmod(depth, num_stages)
    return [base + (k < extra) for k in range(num_stages)]


class BiFlowNet(nn.Module):
    """The reverse model G: (noise, labels, guidance) -> clean latent, optionally with stage states.

    Args:
        input_size, patch_size, in_channels: latent side (32), patch (2), channels (4).
        hidden_size, depth, num_heads, mlp_ratio: trunk width, blocks, heads, MLP size
            (SwiGLU hidden width is int(2/3 * mlp_ratio * hidden_size)).
        num_stages: stage count, equal to the teacher's flow blocks.
        num_classes: class count; the label table has one more row, the null class.
        guidance_scale: multiplier on the guidance value before its sinusoid.
        rope_base: RoPE frequency base.

    Example::

        >>> net = BiFlowNet(input_size=8, hidden_size=32, depth=4, num_heads=2, num_stages=2, num_classes=10)
        >>> x, stages = net(torch.randn(3, 4, 8, 8), torch.tensor([0, 1, 2]), torch.ones(3), return_stages=True)
        >>> x.shape, len(stages), stages[0].shape
        (torch.Size([3, 4, 8, 8]), 2, torch.Size([3, 16, 32]))
    """

    def __init__(self, *, input_size: int = 32, patch_size: int = 2, in_channels: int = 4,
                 hidden_size: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 num_stages: int = 8, num_classes: int = 1000, guidance_scale: float = 1000.0,
                 rope_base: float = 10000.0):
        super().__init__()
        self.patch_size = patch_size
        self.input_size = input_size
        self.token_dim = in_channels * patch_size ** 2
        grid = input_size // patch_size
        self.num_tokens = grid ** 2
        mlp_hidden = int(2 * mlp_ratio * hidden_size / 3)
        self.x_embedder = nn.Linear(self.token_dim, hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        self.g_embedder = TimestepEmbedder(hidden_size, scale=guidance_scale)
        self.blocks = nn.ModuleList(TransformerBlock(hidden_size, num_heads, mlp_hidden, adaln=True, modern=True)
                                    for _ in range(depth))
        # Block indices whose output closes a stage (plain ints: tensors here would land on `meta`).
        self.stage_ends = frozenset(end - 1 for end in itertools.accumulate(stage_sizes(depth, num_stages)))
        self.num_stages = num_stages
        self.denoise_block = TransformerBlock(hidden_size, num_heads, mlp_hidden, adaln=False, modern=True)
        self.norm_out = RMSNorm(hidden_size)
        self.head = nn.Linear(hidden_size, self.token_dim)
        cos, sin = rope_2d_tables(grid, hidden_size // num_heads, rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)  # (T, head_dim), derived: not saved
        self.register_buffer("rope_sin", sin, persistent=False)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        init_linear_xavier(self)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.g_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.g_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            zero_adaln(block)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: torch.Tensor, *,
                return_stages: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """noise (N, C, H, W), labels (N,) or None (null class), guidance (N,) -> latent (N, C, H, W),
        plus the `num_stages` stage outputs, each (N, T, D), when `return_stages`."""
        n = noise.shape[0]
        rope = (self.rope_cos, self.rope_sin)
        x = self.x_embedder(patchify(noise, self.patch_size))  # (N, T, D)
        c = self.y_embedder(labels, n) + self.g_embedder(guidance)  # (N, D)
        stages = []
        for i, block in enumerate(self.blocks):
            x = block(x, c, rope)  # (N, T, D)
            if return_stages and i in self.stage_ends:
                stages.append(x)
        x = self.denoise_block(x, rope=rope)  # (N, T, D)
        tokens = self.head(self.norm_out(x))  # (N, T, C*p*p)
        out = unpatchify(tokens, self.patch_size, (self.input_size, self.input_size))  # (N, C, H, W)
        return (out, stages) if return_stages else out

    def flops(self) -> int:
        """Matmul FLOPs of one forward per sample, multiply-add = 2 (what `FlopCounterMode` counts)."""
        t, d, c = self.num_tokens, self.x_embedder.out_features, self.token_dim
        total = 2 * t * c * d + self.g_embedder.flops()  # patch embedding, guidance MLP
        total += sum(b.flops(t) for b in self.blocks) + self.denoise_block.flops(t)
        return total + 2 * t * d * c  # head


class AlignmentHeads(nn.Module):
    """Training-only projections, one per stage, from G's width D to the teacher's token width C*p*p.

    Example::

        >>> net = BiFlowNet(input_size=8, hidden_size=32, depth=4, num_heads=2, num_stages=2, num_classes=10)
        >>> heads = AlignmentHeads.for_net(net)
        >>> _, stages = net(torch.randn(1, 4, 8, 8), None, torch.zeros(1), return_stages=True)
        >>> [h.shape for h in heads(stages)]
        [torch.Size([1, 16, 16]), torch.Size([1, 16, 16])]
    """

    def __init__(self, num_stages: int, hidden_size: int, token_dim: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(hidden_size, token_dim) for _ in range(num_stages))

    @classmethod
    def for_net(cls, net: BiFlowNet) -> AlignmentHeads:
        return cls(net.num_stages, net.x_embedder.out_features, net.token_dim)

    def forward(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """Stage states [(N, T, D)] * num_stages -> predicted trajectory tokens [(N, T, C*p*p)]."""
        if len(stages) != len(self.heads):
            raise ValueError(f"got {len(stages)} stage states for {len(self.heads)} alignment heads")
        return [head(s) for head, s in zip(self.heads, stages)]


@dataclass(frozen=True)
class BiFlowConfig:
    """Defaults of one BiFlow id; every field can be overridden in `load_sampler`."""

    hidden_size: int = option(768, "transformer width")
    depth: int = option(12, "trunk blocks (the denoising block is extra)")
    num_heads: int = option(12, "attention heads (head dim divisible by 4 for RoPE)")
    mlp_ratio: float = option(4.0, "SwiGLU hidden width is 2/3 of this times width")
    num_stages: int = option(ITARFLOW_B2.num_blocks, "stages = teacher flow blocks")
    patch_size: int = option(2, "latent patch side")
    input_size: int = option(32, "latent side")
    in_channels: int = option(4, "latent channels")
    num_classes: int = option(1000, "class count (the null class is extra)")
    guidance: float = option(0.0, "default guidance scale fed to G (0 = none)")
    guidance_scale: float = option(1000.0, "multiplier on guidance before its sinusoid")
    rope_base: float = option(10000.0, "RoPE frequency base")
    space: str = option("latent", "latent (SD-VAE, decoded at 8x) or pixel (decode is the identity)")
    vae: str | None = option(None, "SD-VAE folder or hub id (see adapters.vae)")


class BiFlowSampler(TorchSampler):
    """One pass of G per image, whatever the guidance: the scale is an input of the network,
    embedded like a timestep (the harness convention, 0 = no guidance; a checkpoint trained
    with another convention must be given scales in its own terms). Labels None samples the
    null class, where a non-zero guidance has no meaning and is refused."""

    def __init__(self, info: ModelInfo, net: BiFlowNet, config: BiFlowConfig, *, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(info, net, device=device, dtype=dtype, vae=config.vae)
        self.config = config

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None) -> torch.Tensor:
        g = check_guidance(self.info.name, self.config.guidance if guidance is None else guidance)
        check_guided_labels(self.info.name, g, labels)
        scale = torch.full((noise.shape[0],), g, device=self.device, dtype=torch.float32)  # (N,)
        return self.net(noise, labels, scale)


def build(name: str, config: BiFlowConfig, *, checkpoint: CheckpointRef | str | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> BiFlowSampler:
    """Registry builder for the BiFlow ids (see `adapters.load_sampler`).

    Args:
        name: the model id, for messages and `ModelInfo.name`.
        config: a `BiFlowConfig`.
        checkpoint: a state_dict of `BiFlowNet` (alignment heads excluded), or a container
            whose EMA entry (or the entry the ref names) is one; None: random weights.
        device, dtype: where and in what precision the network runs.

    Example::

        >>> s = build("biflow-b2", BiFlowConfig(hidden_size=64, depth=4, num_heads=2, num_stages=2, input_size=8))
        >>> s.info.nfe, s.info.sample_shape, s.info.image_size
        (1, (4, 8, 8), 64)
    """
    check_guidance(name, config.guidance)
    stage_sizes(config.depth, config.num_stages)
    check_patch_grid(name, config.input_size, config.patch_size)
    if config.hidden_size % config.num_heads or (config.hidden_size // config.num_heads) % 4:
        raise InputError(f"{name}: hidden_size / num_heads must be an integer divisible by 4 (2-D RoPE), "
                         f"got {config.hidden_size} / {config.num_heads}")
    check_space(name, config.space)

    def make_net() -> BiFlowNet:
        return BiFlowNet(input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
                         hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads,
                         mlp_ratio=config.mlp_ratio, num_stages=config.num_stages, num_classes=config.num_classes,
                         guidance_scale=config.guidance_scale, rope_base=config.rope_base)

    def describe(net: BiFlowNet) -> dict:
        return dict(nfe=1, sequential_steps=1, num_classes=config.num_classes,
                    **sample_fields(config.space, config.in_channels, config.input_size))

    return build_sampler(name, FAMILY, make_net=make_net, describe=describe, checkpoint=checkpoint, device=device,
                         dtype=dtype, sampler=lambda info, net: BiFlowSampler(info, net, config,
                                                                              device=torch.device(device), dtype=dtype))
