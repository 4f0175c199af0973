"""Flax ports of the shared transformer blocks in `adapters.layers`, with their converters.

Each module computes what its torch namesake computes, in the dtype of its input (the
parameters are expected in that dtype too), except where torch's kernels or code work in
float32: the timestep sinusoid, RMSNorm and LayerNorm statistics, attention logits and
softmax, and products with a Python scalar (see `scale_by`).

Each ``convert_*`` function reads one torch module's tensors through a `StateDictReader`
and returns the params subtree of the matching Flax module, so a family's converter is a
walk over its torch names.

Example::

    >>> import jax, jax.numpy as jnp
    >>> blk = TransformerBlock(64, 4, 256, adaln=True)
    >>> x, c = jnp.ones((2, 16, 64)), jnp.ones((2, 64))
    >>> params = blk.init(jax.random.key(0), x, c)["params"]
    >>> blk.apply({"params": params}, x, c).shape
    (2, 16, 64)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from adapters.jax.convert import StateDictReader


def patchify(x: jax.Array, patch_size: int) -> jax.Array:
    """(N, C, H, W) -> (N, T, C*p*p), tokens row-major and features channel-major: the
    layout of torch `F.unfold` (`adapters.layers.patchify`)."""
    n, c, h, w = x.shape
    p = patch_size
    x = x.reshape(n, c, h // p, p, w // p, p)  # (N, C, gh, p, gw, p)
    return x.transpose(0, 2, 4, 1, 3, 5).reshape(n, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: jax.Array, patch_size: int, size: tuple[int, int]) -> jax.Array:
    """(N, T, C*p*p) -> (N, C, H, W); the inverse of `patchify` (torch `F.fold`)."""
    n, _, f = tokens.shape
    p, (h, w) = patch_size, size
    c = f // (p * p)
    x = tokens.reshape(n, h // p, w // p, c, p, p)  # (N, gh, gw, C, p, p)
    return x.transpose(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: x * (1 + scale) + shift, with (N, D) shift/scale broadcast over tokens of x (N, T, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


def scale_by(x: jax.Array, s: float | jax.Array) -> jax.Array:
    """x * s for a scalar s, computed in float32 and rounded once to x's dtype.

    torch multiplies a bfloat16 tensor by a Python float in float32 ("opmath"); JAX would
    first round s to bfloat16 (1/3 -> 0.334), so low-precision samplers drift without this.
    """
    return (x.astype(jnp.float32) * s).astype(x.dtype)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal features of scalars t (N,) -> (N, dim) in float32, laid out [cos | sin] as in
    DiT/GLIDE; odd `dim` is zero-padded."""
    half = dim // 2
    # Constants: the float32 exponents torch computes, then a correctly rounded exp. Arguments
    # reach 1000 * t, so a one-ulp difference in a frequency (jnp.exp vs torch.exp) would
    # already move a feature by 1e-4.
    expo = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32) / np.float32(half)
    freqs = jnp.asarray(np.exp(expo.astype(np.float64)).astype(np.float32))  # (half,)
    args = t.astype(jnp.float32)[:, None] * freqs[None]  # (N, half)
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)  # (N, 2*half)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Scalar (N,) -> (N, D): float32 sinusoid of `scale * value`, cast to `dtype`, then a SiLU MLP.

    `dtype` is the MLP's (the parameters') dtype, which torch casts the sinusoid to.
    """

    hidden_size: int
    frequency_embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, t: jax.Array, dtype: jnp.dtype) -> jax.Array:
        t = t.astype(jnp.float32) * self.scale  # torch scales the float32 time tensor
        freq = timestep_embedding(t, self.frequency_embedding_size).astype(dtype)  # (N, F)
        h = nn.silu(nn.Dense(self.hidden_size, dtype=dtype, name="mlp_0")(freq))
        return nn.Dense(self.hidden_size, dtype=dtype, name="mlp_2")(h)  # (N, D)


def convert_timestep_embedder(r: StateDictReader, prefix: str, hidden_size: int,
                              frequency_embedding_size: int = 256) -> dict:
    return {"mlp_0": r.linear(f"{prefix}.mlp.0", frequency_embedding_size, hidden_size),
            "mlp_2": r.linear(f"{prefix}.mlp.2", hidden_size, hidden_size)}


class LabelEmbedder(nn.Module):
    """Labels (N,) -> (N, D) from a table with a null row (index `num_classes`); labels None
    embeds all `batch` samples as the null class."""

    num_classes: int
    hidden_size: int

    @nn.compact
    def __call__(self, labels: jax.Array | None, batch: int) -> jax.Array:
        if labels is None:
            labels = jnp.full((batch,), self.num_classes, jnp.int32)
        table = self.param("embedding_table", nn.initializers.normal(0.02), (self.num_classes + 1, self.hidden_size))
        return jnp.take(table, labels, axis=0)  # (N, D)


def convert_label_embedder(r: StateDictReader, prefix: str, num_classes: int, hidden_size: int) -> dict:
    return {"embedding_table": r.get(f"{prefix}.embedding_table.weight", num_classes + 1, hidden_size)}


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """LayerNorm over the last dim without affine weights, statistics in float32 (as torch's
    kernels accumulate for low-precision inputs), result in x's dtype."""
    y = x.astype(jnp.float32)
    mean = y.mean(-1, keepdims=True)
    var = jnp.square(y - mean).mean(-1, keepdims=True)
    return ((y - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dim, in float32, cast back, then the optional weight."""

    dim: int
    eps: float = 1e-6
    elementwise_affine: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = x.astype(jnp.float32)
        y = (y * jax.lax.rsqrt(jnp.square(y).mean(-1, keepdims=True) + self.eps)).astype(x.dtype)
        if not self.elementwise_affine:
            return y
        return y * self.param("scale", nn.initializers.ones, (self.dim,))


def rope_2d_tables(grid: int, head_dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """float32 cos and sin tables (T, head_dim) of axial 2-D RoPE, as `adapters.layers.rope_2d_tables`:
    first half of a head's channels rotates with the token's row, second half with its column,
    channel j paired with j + head_dim/4."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = np.float32(base) ** (-np.arange(quarter, dtype=np.float32) / np.float32(quarter))  # (d/4,)
    pos = np.arange(grid, dtype=np.float32)
    rows, cols = np.repeat(pos, grid), np.tile(pos, grid)  # (T,) row-major tokens
    ang_r = rows[:, None] * freqs[None]  # (T, d/4)
    ang_c = cols[:, None] * freqs[None]
    angles = np.concatenate([ang_r, ang_r, ang_c, ang_c], axis=-1)  # (T, d)
    return np.cos(angles), np.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate x (N, T, H, d) by tables (T, d) from `rope_2d_tables` (rotate-half per axis)."""
    n, t, h, d = x.shape
    xs = x.reshape(n, t, h, 2, 2, d // 4)  # (N, T, H, axis, half, d/4)
    rotated = jnp.stack([-xs[..., 1, :], xs[..., 0, :]], axis=-2).reshape(n, t, h, d)
    cos, sin = cos.astype(x.dtype)[None, :, None], sin.astype(x.dtype)[None, :, None]  # (1, T, 1, d)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Bidirectional multi-head self-attention (`jax.nn.dot_product_attention`: logits and
    softmax in float32), with optional qk RMSNorm and 2-D RoPE tables."""

    dim: int
    num_heads: int
    qkv_bias: bool = True
    qk_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        n, t, d = x.shape
        head_dim = d // self.num_heads
        qkv = nn.Dense(3 * d, use_bias=self.qkv_bias, name="qkv")(x).reshape(n, t, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (N, T, H, d) each
        if self.qk_norm:
            q, k = RMSNorm(head_dim, name="q_norm")(q), RMSNorm(head_dim, name="k_norm")(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = jax.nn.dot_product_attention(q, k, v)  # (N, T, H, d)
        return nn.Dense(d, name="proj")(out.reshape(n, t, d))  # (N, T, D)


class Mlp(nn.Module):
    """fc1 -> GELU (tanh approximation, as DiT) -> fc2."""

    dim: int
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.gelu(nn.Dense(self.hidden, name="fc1")(x), approximate=True)
        return nn.Dense(self.dim, name="fc2")(h)


class SwiGLU(nn.Module):
    """fc2(silu(a) * b) with [a | b] = fc1(x)."""

    dim: int
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a, b = jnp.split(nn.Dense(2 * self.hidden, name="fc1")(x), 2, axis=-1)  # (N, T, hidden) each
        return nn.Dense(self.dim, name="fc2")(nn.silu(a) * b)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block, adaLN-Zero conditioned on c (N, D) or plain; `modern` selects
    RMSNorm, SwiGLU, qk-norm and no qkv bias over LayerNorm, GELU MLP and biased qkv.
    See `adapters.layers.TransformerBlock`."""

    dim: int
    num_heads: int
    mlp_hidden: int
    adaln: bool
    modern: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array | None = None,
                 rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        affine = not self.adaln
        if self.modern:
            norm1 = RMSNorm(self.dim, elementwise_affine=affine, name="norm1")
            norm2 = RMSNorm(self.dim, elementwise_affine=affine, name="norm2")
            attn = Attention(self.dim, self.num_heads, qkv_bias=False, qk_norm=True, name="attn")
            mlp = SwiGLU(self.dim, self.mlp_hidden, name="mlp")
        else:  # DiT's blocks are always adaLN, so their LayerNorms carry no weights
            norm1 = norm2 = layer_norm
            attn = Attention(self.dim, self.num_heads, qkv_bias=True, name="attn")
            mlp = Mlp(self.dim, self.mlp_hidden, name="mlp")
        if not self.adaln:
            x = x + attn(norm1(x), rope)
            return x + mlp(norm2(x))  # (N, T, D)
        mod = nn.Dense(6 * self.dim, name="adaLN_modulation")(nn.silu(c))  # (N, 6D)
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)  # (N, D) each
        x = x + gate1[:, None] * attn(modulate(norm1(x), shift1, scale1), rope)
        return x + gate2[:, None] * mlp(modulate(norm2(x), shift2, scale2))  # (N, T, D)


def convert_block(r: StateDictReader, prefix: str, dim: int, mlp_hidden: int, num_heads: int, *,
                  adaln: bool, modern: bool = False) -> dict:
    """Params of `TransformerBlock` from the torch block at `prefix` (e.g. ``blocks.3``)."""
    head_dim = dim // num_heads
    attn = {"qkv": r.linear(f"{prefix}.attn.qkv", dim, 3 * dim, bias=not modern),
            "proj": r.linear(f"{prefix}.attn.proj", dim, dim)}
    out = {"attn": attn}
    if modern:
        attn["q_norm"] = r.norm(f"{prefix}.attn.q_norm", head_dim, bias=False)
        attn["k_norm"] = r.norm(f"{prefix}.attn.k_norm", head_dim, bias=False)
        out["mlp"] = {"fc1": r.linear(f"{prefix}.mlp.fc1", dim, 2 * mlp_hidden),
                      "fc2": r.linear(f"{prefix}.mlp.fc2", mlp_hidden, dim)}
        if not adaln:
            out["norm1"] = r.norm(f"{prefix}.norm1", dim, bias=False)
            out["norm2"] = r.norm(f"{prefix}.norm2", dim, bias=False)
    else:
        out["mlp"] = {"fc1": r.linear(f"{prefix}.mlp.fc1", dim, mlp_hidden),
                      "fc2": r.linear(f"{prefix}.mlp.fc2", mlp_hidden, dim)}
    if adaln:
        out["adaLN_modulation"] = r.linear(f"{prefix}.adaLN_modulation.1", dim, 6 * dim)
    return out
