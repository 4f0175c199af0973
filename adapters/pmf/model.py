"""pixel MeanFlow (pMF, arXiv 2601.22158): iMF's architecture in pixel space, predicting images.

The network follows the official PyTorch code (github:Lyy-iiis/pMF, branch ``torch``,
``models/pmfDiT.py``): iMF's in-context DiT (`adapters.imf.model.IMFDiT`, whose blocks,
embedders, sampler and key mapping it shares) with

- a bottleneck patch embedding: a stride-p convolution to 128 channels (256 for widths
  above 1024), then a 1x1 convolution to the width (``x_embedder.proj1`` / ``proj2``);
- a learned position table over the whole sequence (``pos_embed``), and 2-D rotary
  positions on the patch tokens only (a head's first half of channel pairs turns with the
  token's row, the second half with its column; the prefix tokens are not rotated);
- conditioning tokens stored as (1, n, D) tables, as the reference's are;
- x-prediction: the network outputs an image x, and u = (z - x) / max(t, 0.05), so one
  step from t = 1 returns x itself;
- SwiGLU widths rounded up to a multiple of 8 above width 1024 (H sizes: 3413 -> 3416).

It works on 3 x 256 x 256 (or 512) pixels in [-1, 1]: `decode` is the identity and a clamp
(the reference maps samples to images by (x + 1) / 2 and a clip). The sampler multiplies
the harness's standard-normal noise by the size's noise scale first (``noise_scale`` in the
reference's ``pmf.py``: 1, 2 or 4).

Checkpoints: the released ``pMF-*.pt`` is a state_dict of the reference's ``pixelMeanFlow``
(keys ``net.*``), which its ``evaluate.py`` loads with ``strict=False``: a key of the file
the evaluation model lacks is passed over, a key it has that the file lacks keeps its
initial value. Two kinds of key differ between the evaluation model and the state_dicts it
is meant to load, and nfebench drops exactly those, by name, in a `CheckpointWarning`
(`IGNORED_REASON`); every other key loads strictly, so a file that strict=False would load
only in part is refused with every missing, unexpected and mis-shaped tensor named:

- ``net.rope_freqs``: the reference registers its rotary table as a buffer, so a state_dict
  saved from it carries the table, and one converted from the JAX training code (where it
  is not a parameter) does not. It is derived from the config; nfebench recomputes it.
- ``net.v_heads.*`` and ``net.v_final_layer.*``: the auxiliary v head (instantaneous
  velocity, a training aid), which the reference's evaluation model does not build.

Random weights (the reference's init): the gates and final layer start at zero, so an
untrained network predicts x = 0 and every sample is the same grey image; timings are
unaffected, quality numbers meaningless (rows say "random-init").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.api.checkpoint import CheckpointRef
from adapters.api.config import option
from adapters.api.errors import InputError
from adapters.base import check_positive_int
from adapters.builder import Layout
from adapters.imf.model import (
    ROPE_THETA,
    IMFDiT,
    MeanFlowDiTConfig,
    MeanFlowDiTSampler,
    build_mean_flow_dit,
    mlp_hidden,
    reference_key,
    validate,
)

FAMILY = "pmf"
T_FLOOR = 0.05  # u = (z - x) / max(t, T_FLOOR), the reference's clamp
IGNORED_REASON = ("pMF's reference loads with strict=False, and these are not weights of its evaluation model: "
                  "rope_freqs is its rotary table (a buffer, recomputed here from the config), v_heads and "
                  "v_final_layer its auxiliary v head (a training aid it does not build for sampling)")


def ignored_key(key: str) -> bool:
    """Keys (after `adapters.imf.model.reference_key`) of a pMF checkpoint that nfebench drops, by name."""
    return key == "rope_freqs" or key.startswith(("v_heads.", "v_final_layer."))


def grid_rope(head_dim: int, grid: int, theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (grid*grid, head_dim/2) of pMF's 2-D rotary positions on row-major patch
    tokens: pair j < head_dim/4 turns by row * f_j, pair head_dim/4 + j by column * f_j, with
    f_j = theta^(-2j / (head_dim/2)) (the reference's `precompute_rope_freqs`)."""
    half = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, half, 2, dtype=torch.float32) / half))  # (d/4,)
    per_axis = torch.outer(torch.arange(grid, dtype=torch.float32), freqs)  # (g, d/4)
    rows = per_axis[:, None].expand(grid, grid, -1)  # (g, g, d/4): token (i, j) takes row i
    cols = per_axis[None].expand(grid, grid, -1)  # column j
    angles = torch.cat([rows, cols], dim=-1).reshape(grid * grid, half)  # (T, d/2)
    return angles.cos(), angles.sin()


class BottleneckPatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, T, D) through `bottleneck` channels: a stride-p convolution, then a 1x1 one."""

    def __init__(self, patch_size: int, in_channels: int, bottleneck: int, hidden_size: int):
        super().__init__()
        self.proj1 = nn.Conv2d(in_channels, bottleneck, patch_size, stride=patch_size)
        self.proj2 = nn.Conv2d(bottleneck, hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)  # (N, T, D)

    def flops(self, tokens: int) -> int:
        w1, w2 = self.proj1.weight, self.proj2.weight
        return 2 * tokens * (w1[0].numel() * w1.shape[0] + w2[0].numel() * w2.shape[0])


class PMFDiT(IMFDiT):
    """pMF's DiT (the reference's ``pmfDiT`` in evaluation mode); see the module docstring.

    Args:
        bottleneck_channels: width of the patch embedding's bottleneck (128; 256 for pMF-H).
        others: as `adapters.imf.model.IMFDiT` (input_size 256, patch_size 16, in_channels 3).

    `forward(x, t, h, omega, t_min, t_max, y)` -> u = (x - net(x)) / max(t, 0.05).

    Example::

        >>> net = PMFDiT(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=2,
        ...              mlp_hidden=64, num_classes=10, head_depth=1, bottleneck_channels=8)
        >>> ones = torch.ones(2)
        >>> net(torch.randn(2, 3, 16, 16), ones, ones, ones, 0 * ones, ones, torch.tensor([3, 4])).shape
        torch.Size([2, 3, 16, 16])
    """

    has_v_final_layer = False

    def __init__(self, *, input_size: int = 256, patch_size: int = 16, in_channels: int = 3, hidden_size: int = 768,
                 bottleneck_channels: int = 128, **kwargs):
        embed = BottleneckPatchEmbed(patch_size, in_channels, bottleneck_channels, hidden_size)
        super().__init__(input_size=input_size, patch_size=patch_size, in_channels=in_channels,
                         hidden_size=hidden_size, x_embedder=embed, **kwargs)
        self.pos_embed = nn.Parameter(torch.empty(1, self.prefix_tokens + self.num_patches, hidden_size))
        nn.init.normal_(self.pos_embed, std=0.02)

    def _token_shape(self, count: int) -> tuple[int, ...]:
        return (1, count, self.hidden_size)

    def _rope_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return grid_rope(self.head_dim, self.grid)  # patch tokens only

    def _add_positions(self, seq: torch.Tensor) -> torch.Tensor:
        return seq + self.pos_embed  # (N, S, D)

    def _output(self, x: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        t = t.clamp(min=T_FLOOR).to(x.dtype)[:, None, None, None]  # (N, 1, 1, 1)
        return (x - out) / t


def pmf_mlp_hidden(config: MeanFlowDiTConfig) -> int:
    """The reference's SwiGLU width: iMF's, rounded up to a multiple of 8 above width 1024."""
    hidden = mlp_hidden(config)
    return (hidden + 7) // 8 * 8 if config.hidden_size > 1024 else hidden


@dataclass(frozen=True)
class PMFConfig(MeanFlowDiTConfig):
    """A pMF id's defaults (pMF-B/16 unless overridden)."""

    input_size: int = option(256, "image side in pixels")
    patch_size: int = option(16, "patch side")
    in_channels: int = option(3, "image channels")
    depth: int = option(16, "transformer blocks, u head included")
    bottleneck_channels: int = option(128, "patch embedding bottleneck (256 for pMF-H)")
    noise_scale: float = option(
        1.0, "std of the initial noise (the reference's noise_scale); generate's noise is standard normal")
    reference_settings: tuple[tuple[int, float, float, float], ...] = option(
        ((1, 7.5, 0.1, 0.8),), "(num_steps, omega, t_min, t_max) of the reference README's evaluation commands")


def build(name: str, config: PMFConfig, *, checkpoint: CheckpointRef | str | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> MeanFlowDiTSampler:
    """Registry builder of the pMF ids (see `adapters.load_sampler`): pixel space, no decoder.

    Example::

        >>> s = build("pmf-b16", PMFConfig(hidden_size=64, depth=2, num_heads=4, head_depth=1, input_size=32,
        ...                                 bottleneck_channels=8))
        >>> s.info.space, s.info.sample_shape, s.decoder is None
        ('pixel', (3, 32, 32), True)
    """
    config = validate(name, config, head_dim_multiple=4)  # 2-D rotary positions split a head in four
    if isinstance(config.noise_scale, bool) or not isinstance(config.noise_scale, (int, float)) \
            or not 0 < config.noise_scale < float("inf"):
        raise InputError(f"{name}: noise_scale must be a positive number, got {config.noise_scale!r}")
    check_positive_int(name, "bottleneck_channels", config.bottleneck_channels)

    def make_net() -> PMFDiT:
        return PMFDiT(input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
                      hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads,
                      mlp_hidden=pmf_mlp_hidden(config), num_classes=config.num_classes,
                      head_depth=config.head_depth, bottleneck_channels=config.bottleneck_channels)

    return build_mean_flow_dit(name, config, make_net, family=FAMILY, space="pixel", checkpoint=checkpoint,
                               device=device, dtype=dtype, noise_scale=config.noise_scale,
                               layout=Layout(rename=reference_key, ignore=ignored_key, ignore_reason=IGNORED_REASON))
