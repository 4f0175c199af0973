"""Shared torch building blocks for the adapters."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, T, C*p*p) with T = (H/p)*(W/p), token features channel-major
    (the layout of `F.unfold`, which apple/ml-tarflow uses; every adapter shares it so
    BiFlow's hidden states line up with its TARFlow teacher's tokens)."""
    return F.unfold(x, patch_size, stride=patch_size).transpose(1, 2)


def unpatchify(tokens: torch.Tensor, patch_size: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, T, C*p*p) -> (N, C, H, W); the inverse of `patchify`."""
    return F.fold(tokens.transpose(1, 2), size, patch_size, stride=patch_size)


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, T, D) by a stride-p convolution, tokens row-major (DiT's and iMF's
    `x_embedder.proj`)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)

    def flops(self, tokens: int) -> int:
        """Matmul FLOPs per image (multiply-add = 2): the convolution is a linear map per patch."""
        w = self.proj.weight
        return 2 * tokens * w[0].numel() * w.shape[0]


# ---------------------------------------------------------------------------
# Transformer building blocks shared by the DiT backbone (Rectified Flow, MeanFlow)
# and the BiFlow reverse model. Parameter names follow facebookresearch/DiT
# (qkv, proj, fc1, fc2, adaLN_modulation.1, mlp.0/2, embedding_table) so that
# DiT-layout state_dicts line up key for key.
# ---------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, with (N, D) shift/scale broadcast over tokens of x (N, T, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of scalars t (N,) -> (N, dim), laid out [cos | sin] as in DiT/GLIDE.

    Frequencies run geometrically from 1 down to 1/max_period; odd `dim` is zero-padded.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Scalar (a time, or a guidance scale) -> (N, D): sinusoid of `scale * value`, then a SiLU MLP.

    `scale` maps the scalar's natural range onto DiT's timestep range: flow times in [0, 1]
    use 1000 so the sinusoid sees the same arguments as DiT's integer timesteps.
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size
        self.scale = scale

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = timestep_embedding(t * self.scale, self.frequency_embedding_size)  # (N, F)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))  # (N, D)

    def flops(self) -> int:
        """Matmul FLOPs per scalar embedded (multiply-add = 2)."""
        d = self.mlp[0].out_features
        return 2 * (self.frequency_embedding_size * d + d * d)


class LabelEmbedder(nn.Module):
    """Class labels -> (N, D), with one extra row (index `num_classes`) for the null class of
    classifier-free guidance. `labels=None` embeds every sample as the null class."""

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        if labels is None:
            labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=self.embedding_table.weight.device)
        return self.embedding_table(labels)  # (N, D)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dim, computed in float32 for low-precision inputs.

    (Written out rather than `nn.RMSNorm` because the project supports torch >= 2.1.)
    """

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return y * self.weight if self.weight is not None else y


def rope_2d_tables(grid: int, head_dim: int, base: float = 10000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (T, head_dim) of axial 2-D rotary embeddings on a grid x grid token map.

    The first half of each head's channels rotates with the token's row, the second half
    with its column; inside each half, channel j pairs with j + head_dim/4 (rotate-half
    layout) at frequency base^(-j / (head_dim/4)). Tokens are in row-major order, as
    `patchify` lays them out.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, dtype=torch.float32, device=device) / quarter)  # (d/4,)
    pos = torch.arange(grid, dtype=torch.float32, device=device)
    rows = pos.repeat_interleave(grid)  # (T,) row index of each token
    cols = pos.repeat(grid)  # (T,) column index
    ang_r = rows[:, None] * freqs[None]  # (T, d/4)
    ang_c = cols[:, None] * freqs[None]
    angles = torch.cat([ang_r, ang_r, ang_c, ang_c], dim=-1)  # (T, d)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (N, H, T, d) by tables (T, d) from `rope_2d_tables`; preserves norms and makes
    q.k depend on positions only through their difference."""
    n, h, t, d = x.shape
    xs = x.view(n, h, t, 2, 2, d // 4)  # (N, H, T, axis, half, d/4)
    rotated = torch.stack([-xs[..., 1, :], xs[..., 0, :]], dim=-2).view(n, h, t, d)  # rotate-half per axis
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention through `F.scaled_dot_product_attention`.

    Options: `qk_norm` (RMSNorm on each head's queries and keys) and rotary tables passed
    to `forward`.
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, qk_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, N, H, T, d)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, d)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


class Mlp(nn.Module):
    """fc1 -> GELU (tanh approximation, as DiT) -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """fc2(silu(a) * b) with [a | b] = fc1(x): one fused input matmul for the gate and value."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)  # (N, T, hidden) each
        return self.fc2(F.silu(a) * b)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block, either adaLN-Zero conditioned (DiT) or plain.

    Args:
        dim: width D. num_heads: attention heads. mlp_hidden: MLP hidden width.
        adaln: condition on c (N, D) through shift/scale/gate from a zero-initialised
            SiLU-Linear (DiT's adaLN-Zero); the norms then carry no affine weights.
        modern: RMSNorm, SwiGLU MLP, qk-norm and no qkv bias, instead of DiT's LayerNorm,
            GELU MLP and biased qkv.

    Example::

        >>> blk = TransformerBlock(64, 4, 256, adaln=True)
        >>> blk(torch.randn(2, 16, 64), c=torch.randn(2, 64)).shape
        torch.Size([2, 16, 64])
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, *, adaln: bool, modern: bool = False):
        super().__init__()
        affine = not adaln
        if modern:
            self.norm1 = RMSNorm(dim, elementwise_affine=affine)
            self.norm2 = RMSNorm(dim, elementwise_affine=affine)
            self.attn = Attention(dim, num_heads, qkv_bias=False, qk_norm=True)
            self.mlp = SwiGLU(dim, mlp_hidden)
        else:
            self.norm1 = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
            self.attn = Attention(dim, num_heads, qkv_bias=True)
            self.mlp = Mlp(dim, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if adaln else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if self.adaLN_modulation is None:
            x = x + self.attn(self.norm1(x), rope)
            return x + self.mlp(self.norm2(x))  # (N, T, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)  # (N, D) each
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1), rope)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (N, T, D)

    def flops(self, tokens: int) -> int:
        """Matmul FLOPs of one forward per sample (multiply-add = 2; norms and activations not counted,
        as `FlopCounterMode` does not count them)."""
        d, t = self.attn.proj.in_features, tokens
        mlp_in, mlp_hidden = self.mlp.fc1.out_features, self.mlp.fc2.in_features
        total = 2 * t * d * 3 * d + 2 * t * d * d  # qkv and output projections
        total += 4 * t * t * d  # q @ k^T and attn @ v over all heads
        total += 2 * t * d * mlp_in + 2 * t * mlp_hidden * d  # MLP
        if self.adaLN_modulation is not None:
            total += 2 * d * 6 * d  # once per sample, not per token
        return total


def init_linear_xavier(module: nn.Module) -> None:
    """DiT's base init: xavier-uniform weights and zero biases on every nn.Linear under `module`."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def zero_adaln(block: TransformerBlock) -> None:
    """adaLN-Zero: zero the modulation so each conditioned block starts as the identity."""
    nn.init.zeros_(block.adaLN_modulation[-1].weight)
    nn.init.zeros_(block.adaLN_modulation[-1].bias)
