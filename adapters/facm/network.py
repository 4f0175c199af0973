"""LightningDiT, FACM's network (github:ali-vilab/FACM, ``ldit/lightningdit.py``), as
``ldit/model_manager.py`` builds it from ``ldit/lightningdit.yaml``.

``LightningDiT-XL/1`` there is DiT with the yaml's switches on: RMSNorm (with weights, eps
1e-6, computed in float32) instead of LayerNorm, qk-norm (RMSNorm over each head), a biased
qkv, a SwiGLU MLP of hidden width int(2/3 * 4 * width) with its gate and value in one fused
``w12`` matrix, adaLN with shift (``wo_shift: false``), EVA's 2-D rotary positions on top of
DiT's fixed sin-cos ``pos_embed``, and no ``r_embedder`` (``auxiliary_time_cond: false``,
so the second time the reference's forward takes is unused). Times are raw t in [0, 1]
through DiT's sinusoid ([cos | sin]); the label table has a null row (``class_dropout_prob``
0.1 > 0), index 1000. The patch side is 1, as ``LightningDiT_XL_1`` fixes it (the yaml's
``patch_size: 2`` is never passed), so a 32x16x16 VA-VAE latent is 256 tokens.

EVA's rope (``ldit/pos_embed.py``, ``VisionRotaryEmbeddingFast``): each head's channels
rotate in adjacent pairs (2j, 2j + 1); the first half of the pairs turn with the token's
row, the second half with its column, pair j of a half at frequency
10000^(-2j / (head_dim / 2)) (`eva_rope_tables`). The reference keeps the tables as buffers,
so its checkpoints carry them (``feat_rope.freqs_cos`` / ``freqs_sin``, (T, head_dim) with
each angle repeated for its pair); here they are derived float32 tables, and a file's are
checked against them at load (`check_rope_tables`).

Names follow the reference's state_dict except the SwiGLU's: ``mlp.w12`` / ``mlp.w3`` are
`adapters.layers.SwiGLU`'s ``mlp.fc1`` / ``mlp.fc2`` here (`released_key`).

Example::

    >>> net = LightningDiT(input_size=4, in_channels=8, hidden_size=64, depth=2, num_heads=4, num_classes=10)
    >>> net(torch.randn(2, 8, 4, 4), torch.rand(2), torch.tensor([1, 2])).shape
    torch.Size([2, 8, 4, 4])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adapters.api.errors import InputError
from adapters.flowmatch.model import FinalLayer as DiTFinalLayer
from adapters.flowmatch.model import init_dit
from adapters.imf.model import apply_pair_rope
from adapters.layers import (
    Attention,
    LabelEmbedder,
    PatchEmbed,
    RMSNorm,
    TimestepEmbedder,
    TransformerBlock,
)

ROPE_THETA = 10000.0
ROPE_KEYS = ("feat_rope.freqs_cos", "feat_rope.freqs_sin")  # the reference's rope buffers


def swiglu_hidden(hidden_size: int, mlp_ratio: float) -> int:
    """SwiGLU width as LightningDiTBlock computes it: int(2/3 * int(width * ratio)) (3072 at width 1152)."""
    return int(2 / 3 * int(hidden_size * mlp_ratio))


def eva_rope_tables(head_dim: int, grid: int, theta: float = ROPE_THETA,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (grid * grid, head_dim / 2) of EVA's 2-D rope, one angle per channel pair.

    Pair j < head_dim / 4 turns by row * f_j, pair head_dim / 4 + j by column * f_j, with
    f_j = theta^(-2j / (head_dim / 2)); tokens are row-major. Computed as the reference does,
    in float32, on `device`.
    """
    half = head_dim // 2  # channels per axis
    freqs = 1.0 / theta ** (torch.arange(0, half, 2, device=device)[: half // 2].float() / half)  # (d/4,)
    pos = torch.arange(grid, dtype=torch.float32, device=device)
    rows, cols = pos.repeat_interleave(grid), pos.repeat(grid)  # (T,) each, row-major tokens
    angles = torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], dim=-1)  # (T, d/2)
    return angles.cos(), angles.sin()


def check_rope_tables(sd: dict[str, torch.Tensor], head_dim: int, grid: int, what: str) -> dict[str, torch.Tensor]:
    """`sd` without the reference's rope buffers, after checking them against `eva_rope_tables`
    (each angle repeated over its pair): a file whose rope differs (another grid, head width or
    base) is an InputError, not a silent re-derivation. A file without them passes."""
    sd = dict(sd)
    cos, sin = (t.repeat_interleave(2, dim=-1) for t in eva_rope_tables(head_dim, grid))  # (T, d) each
    for key, ours in zip(ROPE_KEYS, (cos, sin)):
        theirs = sd.pop(key, None)
        if theirs is None:
            continue
        if tuple(theirs.shape) != tuple(ours.shape) or not torch.allclose(theirs.float(), ours, atol=1e-5):
            raise InputError(f"checkpoint {what}: {key} {tuple(theirs.shape)} is not the rope of a {grid}x{grid} "
                             f"token grid with head width {head_dim} ({tuple(ours.shape)}, EVA's base "
                             f"{ROPE_THETA:g}); check input_size, patch_size, hidden_size and num_heads")
    return sd


def released_key(key: str) -> str:
    """A key of the reference's state_dict -> this network's: the SwiGLU's ``mlp.w12`` / ``mlp.w3``
    are ``mlp.fc1`` / ``mlp.fc2`` (`adapters.layers.SwiGLU`); every other name is the reference's."""
    return key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")


class RopeAttention(Attention):
    """`adapters.layers.Attention` with a biased qkv and qk RMSNorm, rotating queries and keys by
    EVA's adjacent-pair tables (`eva_rope_tables`) after the norm, as the reference does."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__(dim, num_heads, qkv_bias=True, qk_norm=True)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.num_heads, self.head_dim).unbind(2)  # (N, T, H, d) each
        q = apply_pair_rope(self.q_norm(q), *rope)
        k = apply_pair_rope(self.k_norm(k), *rope)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (N, H, T, d)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


class LightningBlock(TransformerBlock):
    """`adapters.layers.TransformerBlock` (adaLN with shift and gates, SwiGLU) as LightningDiTBlock
    has it: RMSNorms that keep their weights under adaLN, and `RopeAttention`."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__(dim, num_heads, mlp_hidden, adaln=True, modern=True)
        self.norm1, self.attn, self.norm2 = RMSNorm(dim), RopeAttention(dim, num_heads), RMSNorm(dim)


class FinalLayer(DiTFinalLayer):
    """DiT's adaLN-modulated final layer with LightningDiT's RMSNorm (weights kept) in place of LayerNorm."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__(hidden_size, patch_size, out_channels)
        self.norm_final = RMSNorm(hidden_size)


class LightningDiT(nn.Module):
    """LightningDiT predicting F(x, t, y) (N, C, H, W) on a C x S x S latent (see the module docstring).

    Args:
        input_size: latent side S (16). patch_size: 1. in_channels: C (32).
        hidden_size, depth, num_heads: transformer size (XL: 1152, 28, 16).
        mlp_ratio: MLP width / width before SwiGLU's 2/3 (`swiglu_hidden`).
        num_classes: class count; the label table has one more row, the null class.
    """

    def __init__(self, *, input_size: int = 16, patch_size: int = 1, in_channels: int = 32, hidden_size: int = 1152,
                 depth: int = 28, num_heads: int = 16, mlp_ratio: float = 4.0, num_classes: int = 1000):
        super().__init__()
        self.in_channels, self.patch_size = in_channels, patch_size
        self.grid = input_size // patch_size
        self.head_dim = hidden_size // num_heads
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)  # raw t
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        # Fixed, as in DiT: a Parameter with requires_grad=False, counted (675,260,768 at XL/1) and saved.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid ** 2, hidden_size), requires_grad=False)
        hidden = swiglu_hidden(hidden_size, mlp_ratio)
        self.blocks = nn.ModuleList(LightningBlock(hidden_size, num_heads, hidden) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, in_channels)
        # Derived float32 tables (T, d/2), not weights: a plain attribute, so `.to(bfloat16)` does not round
        # the angles; the reference's copies in a checkpoint are checked by `check_rope_tables`.
        # Made on the device the network is built on; a meta build's on the CPU, so that once loaded
        # (assign=True) it runs; a network moved later takes them along at its first forward.
        here = torch.empty(0).device
        self.rope = eva_rope_tables(self.head_dim, self.grid, device="cpu" if here.type == "meta" else here)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The reference's init, DiT's (`init_dit`)."""
        init_dit(self, (self.t_embedder,))

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p*p*C) in DiT's (row, col, p, q, c) token layout -> (N, C, H, W)."""
        n, p, c, g = x.shape[0], self.patch_size, self.in_channels, self.grid
        x = x.reshape(n, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """x (N, C, H, W), t (N,) in [0, 1] (0 is noise), y (N,) labels or None (the null class) -> F (N, C, H, W)."""
        tokens = self.x_embedder(x) + self.pos_embed.to(x.dtype)  # (N, T, D)
        c = self.t_embedder(t) + self.y_embedder(y, x.shape[0])  # (N, D)
        if self.rope[0].device != x.device:  # moved once, not at every call
            self.rope = tuple(table.to(x.device) for table in self.rope)
        for block in self.blocks:
            tokens = block(tokens, c, self.rope)  # (N, T, D)
        return self.unpatchify(self.final_layer(tokens, c))  # (N, C, H, W)

    def flops(self) -> int:
        """Matmul FLOPs of one forward per sample, multiply-add = 2 (what `FlopCounterMode` counts)."""
        tokens, d = self.grid ** 2, self.pos_embed.shape[-1]
        total = self.x_embedder.flops(tokens) + self.t_embedder.flops()
        total += sum(b.flops(tokens) for b in self.blocks)
        return total + 2 * d * 2 * d + 2 * tokens * d * self.final_layer.linear.out_features  # final adaLN, linear
