"""TARFlow / iTARFlow's network in Flax (flax.linen), and the conversion of the torch weights.

A port of `adapters.tarflow.network` (which follows apple/ml-tarflow name for name): the same
pre-norm causal transformer blocks and the same parameter tree (``blocks_0/attn_blocks_1/
attention/qkv`` is torch's ``blocks.0.attn_blocks.1.attention.qkv``; `convert_params` maps
one onto the other). Besides the full causal pass, each block has the pieces the decoding
loops of `adapters.tarflow.jax_port` call: `MetaBlock.step` (one token against per-layer
key/value caches) and `MetaBlock.affine_window` (a window of tokens after a cached prefix).

Half precision follows the torch code: layer norms normalise and log-scales are
exponentiated in float32, then cast back.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from adapters.tarflow.network import TARFlow as TorchTARFlow
    >>> config = TARFlowConfig(img_size=8, patch_size=2, channels=64, num_blocks=2, layers_per_block=1,
    ...                        num_classes=10)
    >>> params = convert_params(TorchTARFlow(config).state_dict(), config, "tarflow")
    >>> sorted(params), sorted(params["blocks_0"])[:3]
    (['blocks_0', 'blocks_1', 'var'], ['attn_blocks_0', 'class_embed', 'pos_embed'])
    >>> TARFlow(config).apply({"params": params}, jnp.zeros((2, 3, 8, 8)), None, method=TARFlow.log_prob).shape
    (2,)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adapters.jax.convert import StateDictReader
from adapters.jax.layers import patchify
from adapters.tarflow.config import TARFlowConfig

_LN_EPS = 1e-5  # torch's LayerNorm default (Flax's is 1e-6)


def exp_float32(a: jax.Array) -> jax.Array:
    # As the torch code: exponentiate half-precision log-scales in float32.
    return jnp.exp(a.astype(jnp.float32)).astype(a.dtype)


class Attention(nn.Module):
    channels: int
    head_dim: int

    def setup(self):
        self.norm = nn.LayerNorm(epsilon=_LN_EPS, dtype=jnp.float32)
        self.qkv = nn.Dense(self.channels * 3)
        self.proj = nn.Dense(self.channels)

    @property
    def num_heads(self) -> int:
        return self.channels // self.head_dim

    def _qkv(self, x: jax.Array) -> jax.Array:
        """(..., C) -> (..., 3, H, hd): the fused projection is laid out [q | k | v]."""
        h = self.norm(x.astype(jnp.float32)).astype(x.dtype)
        return self.qkv(h).reshape(*x.shape[:-1], 3, self.num_heads, self.head_dim)

    def _attend(self, q, k, v, mask):
        """q (N, H, Tq, hd), k/v (N, H, Tk, hd), mask broadcast to (N, H, Tq, Tk), True =
        may attend. Softmax in float32, as the torch kernels accumulate."""
        logits = jnp.einsum("nhqd,nhkd->nhqk", q, k) * self.head_dim**-0.5
        logits = jnp.where(mask, logits.astype(jnp.float32), -jnp.inf)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        return jnp.einsum("nhqk,nhkd->nhqd", weights, v)

    def __call__(self, x: jax.Array, q_scale: jax.Array | None = None) -> jax.Array:
        """Whole sequence, causal. x: (N, T, C); q_scale: per-row 1/temperature (N, 1, 1, 1)."""
        n, t, c = x.shape
        qkv = self._qkv(x).transpose(2, 0, 3, 1, 4)  # (3, N, H, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if q_scale is not None:
            q = q * q_scale  # scaling the queries divides the logits by the temperature
        causal = jnp.tril(jnp.ones((t, t), bool))
        out = self._attend(q, k, v, causal)  # (N, H, T, hd)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(n, t, c))

    def step(self, x: jax.Array, i: jax.Array, k_cache: jax.Array, v_cache: jax.Array,
             q_scale: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Token `i` alone, x: (R, C). Its key and value are written into the (R, H, T, hd)
        caches at position i, and it attends to positions 0..i (later ones are masked, so
        the cache keeps a fixed shape). Returns (out (R, C), k_cache, v_cache)."""
        r = x.shape[0]
        qkv = self._qkv(x)  # (R, 3, H, hd)
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, qkv[:, 1, :, None], i, axis=2)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, qkv[:, 2, :, None], i, axis=2)
        q = qkv[:, 0, :, None]  # (R, H, 1, hd)
        if q_scale is not None:
            q = q * q_scale
        seen = jnp.arange(k_cache.shape[2]) <= i  # (T,)
        out = self._attend(q, k_cache, v_cache, seen)  # (R, H, 1, hd)
        return self.proj(out.reshape(r, -1)), k_cache, v_cache

    def window(self, x: jax.Array, k_prefix: jax.Array, v_prefix: jax.Array,
               q_scale: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Tokens p..p+W-1 at once, x: (R, W, C), attending to the cached keys and values of
        tokens 0..p-1, (R, H, p, hd) each, and causally within the window. Returns
        (out (R, W, C), the window's keys and values (R, H, W, hd) each)."""
        r, w, c = x.shape
        qkv = self._qkv(x).transpose(2, 0, 3, 1, 4)  # (3, R, H, W, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if q_scale is not None:
            q = q * q_scale
        p = k_prefix.shape[2]
        mask = jnp.tril(jnp.ones((w, p + w), bool), p)  # row i sees the prefix and window tokens 0..i
        out = self._attend(q, jnp.concatenate([k_prefix, k], axis=2), jnp.concatenate([v_prefix, v], axis=2), mask)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(r, w, c)), k, v


class MLP(nn.Module):
    channels: int
    expansion: int

    def setup(self):
        self.norm = nn.LayerNorm(epsilon=_LN_EPS, dtype=jnp.float32)
        self.main_0 = nn.Dense(self.channels * self.expansion)
        self.main_2 = nn.Dense(self.channels)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.norm(x.astype(jnp.float32)).astype(x.dtype)
        return self.main_2(nn.gelu(self.main_0(h), approximate=False))  # torch's exact GELU


class AttentionBlock(nn.Module):
    channels: int
    head_dim: int
    expansion: int

    def setup(self):
        self.attention = Attention(self.channels, self.head_dim)
        self.mlp = MLP(self.channels, self.expansion)

    def __call__(self, x, q_scale=None):
        x = x + self.attention(x, q_scale)
        return x + self.mlp(x)

    def step(self, x, i, k_cache, v_cache, q_scale=None):
        """One token per row, x: (R, C) -> (x, k_cache, v_cache)."""
        out, k_cache, v_cache = self.attention.step(x, i, k_cache, v_cache, q_scale)
        x = x + out
        return x + self.mlp(x), k_cache, v_cache

    def window(self, x, k_prefix, v_prefix, q_scale=None):
        """A window of tokens, x: (R, W, C), after a cached prefix -> (x, window keys, values)."""
        out, k, v = self.attention.window(x, k_prefix, v_prefix, q_scale)
        x = x + out
        return x + self.mlp(x), k, v


class MetaBlock(nn.Module):
    """One autoregressive flow block; see `adapters.tarflow.network.MetaBlock`. Sequences passed
    to `affine` and `step` are already in this block's (possibly flipped) order."""

    config: TARFlowConfig
    flip: bool

    def setup(self):
        c = self.config
        self.proj_in = nn.Dense(c.channels)
        self.pos_embed = self.param("pos_embed", nn.initializers.normal(1e-2), (c.num_patches, c.channels))
        self.class_embed = (self.param("class_embed", nn.initializers.normal(1e-2), (c.num_classes, 1, c.channels))
                            if c.num_classes else None)
        self.attn_blocks = [AttentionBlock(c.channels, c.head_dim, c.expansion)
                            for _ in range(c.layers_per_block)]
        self.proj_out = nn.Dense(c.token_dim * 2 if c.nvp else c.token_dim)

    def permute(self, x: jax.Array, axis: int = 1) -> jax.Array:
        return jnp.flip(x, axis) if self.flip else x

    def class_term(self, y: jax.Array | None, n: int) -> jax.Array | None:
        """(n, 1, C) class embedding for labels `y`; their mean when `y` is None."""
        if self.class_embed is None:
            return None
        if y is None:
            return jnp.broadcast_to(self.class_embed.mean(axis=0), (n, 1, self.config.channels))
        return self.class_embed[y]

    def split(self, out: jax.Array) -> tuple[jax.Array, jax.Array]:
        """proj_out output (..., 2D or D) -> (a, b), clipped to [-c, c] if configured."""
        if self.config.affine_clip is not None:
            out = jnp.clip(out, -self.config.affine_clip, self.config.affine_clip)
        if self.config.nvp:
            a, b = jnp.split(out, 2, axis=-1)
            return a, b
        return jnp.zeros_like(out), out

    def affine(self, x: jax.Array, cls: jax.Array | None, q_scale: jax.Array | None = None):
        """(a, b), each (N, T, D), for every token of the permuted sequence x: (N, T, D)."""
        h = self.proj_in(x) + self.permute(self.pos_embed, axis=0)  # (N, T, C)
        if cls is not None:
            h = h + cls
        for block in self.attn_blocks:
            h = block(h, q_scale)
        out = self.proj_out(h)  # (N, T, 2D): output i parameterises token i + 1
        out = jnp.concatenate([jnp.zeros_like(out[:, :1]), out[:, :-1]], axis=1)
        return self.split(out)

    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Data to noise. x: (N, T, D) -> (z (N, T, D), log|det dz/dx| (N,))."""
        xp = self.permute(x)
        a, b = self.affine(xp, self.class_term(y, x.shape[0]))
        z = (xp - b) * exp_float32(-a)
        return self.permute(z), -a.sum(axis=(1, 2))

    def step(self, tok: jax.Array, i: jax.Array, caches: list, cls: jax.Array | None,
             q_scale: jax.Array | None):
        """Token i of the permuted sequence, tok: (R, D) -> (a, b) for token i + 1, each
        (R, D), and the updated [(k_cache, v_cache)] per layer."""
        pos = jax.lax.dynamic_index_in_dim(self.permute(self.pos_embed, axis=0), i, keepdims=False)
        h = self.proj_in(tok) + pos  # (R, C)
        if cls is not None:
            h = h + cls
        new_caches = []
        for block, (k_cache, v_cache) in zip(self.attn_blocks, caches):
            h, k_cache, v_cache = block.step(h, i, k_cache, v_cache, q_scale)
            new_caches.append((k_cache, v_cache))
        a, b = self.split(self.proj_out(h))
        return a, b, new_caches

    def affine_window(self, xw: jax.Array, start: int, caches: list, cls: jax.Array | None,
                      q_scale: jax.Array | None):
        """(a, b) from the permuted tokens start..start+W-1, xw: (R, W, D), given per-layer
        (R, H, T, hd) key/value caches filled for tokens 0..start-1; output i parameterises
        token start + i + 1. Returns (a, b) (R, W, D) each and the window's [(keys, values)]."""
        pos = self.permute(self.pos_embed, axis=0)[start:start + xw.shape[1]]  # (W, C)
        h = self.proj_in(xw) + pos  # (R, W, C)
        if cls is not None:
            h = h + cls
        window_kv = []
        for block, (k_cache, v_cache) in zip(self.attn_blocks, caches):
            h, k, v = block.window(h, k_cache[:, :, :start], v_cache[:, :, :start], q_scale)
            window_kv.append((k, v))
        a, b = self.split(self.proj_out(h))
        return a, b, window_kv


class TARFlow(nn.Module):
    """The reference ``Model``: `blocks_k` MetaBlocks and the prior variance `var` (T, D),
    kept as a parameter so it converts and casts with the rest."""

    config: TARFlowConfig

    def setup(self):
        c = self.config
        self.blocks = [MetaBlock(c, i % 2 == 1) for i in range(c.num_blocks)]
        self.var = self.param("var", nn.initializers.ones, (c.num_patches, c.token_dim))

    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Data to noise. x: (N, C, H, W) -> (z tokens (N, T, D), log|det dz/dx| (N,))."""
        z = patchify(x, self.config.patch_size)  # (N, T, D)
        logdet = jnp.zeros(z.shape[0], z.dtype)
        for block in self.blocks:
            z, block_logdet = block(z, y)
            logdet = logdet + block_logdet
        return z, logdet

    def log_prob(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        """log p(x) per sample (N,) under the prior N(0, var), up to a constant."""
        z, logdet = self(x, y)
        return -0.5 * (z**2 / self.var).sum(axis=(1, 2)) + logdet


# ---------------------------------------------------------------------------
# Weight conversion
# ---------------------------------------------------------------------------


def convert_params(state_dict: dict[str, Any], config: TARFlowConfig, what: str) -> dict:
    """The torch adapter's ``TARFlow.state_dict()`` -> this module's Flax params.

    Args:
        state_dict: torch tensors named as `adapters.tarflow.network.TARFlow` (and apple/ml-tarflow)
            name them; the ``attn_mask`` buffers are checked for shape and dropped (the
            causal mask is built in the graph).
        config: the `TARFlowConfig` the weights were trained with.
        what: the model's name, for error messages.

    Returns:
        ``{"blocks_0": {...}, ..., "var": (T, D)}`` of float32 numpy arrays, to be passed as
        ``params`` to the function `make_generate` returns.

    Raises:
        InputError naming every missing, unexpected and mis-shaped tensor.

    Example::

        params = convert_params(sampler.net.state_dict(), sampler.config, "itarflow-b2")
    """
    r = StateDictReader(state_dict, what)
    c, t, d = config.channels, config.num_patches, config.token_dim
    hidden = c * config.expansion
    params: dict[str, Any] = {}
    for i in range(config.num_blocks):
        b = f"blocks.{i}"
        block = {
            "proj_in": r.linear(f"{b}.proj_in", d, c),
            "pos_embed": r.get(f"{b}.pos_embed", t, c),
            "proj_out": r.linear(f"{b}.proj_out", c, 2 * d if config.nvp else d),
        }
        if config.num_classes:
            block["class_embed"] = r.get(f"{b}.class_embed", config.num_classes, 1, c)
        r.get(f"{b}.attn_mask", t, t)  # derived buffer: checked, not needed
        for j in range(config.layers_per_block):
            layer = f"{b}.attn_blocks.{j}"
            block[f"attn_blocks_{j}"] = {
                "attention": {"norm": r.norm(f"{layer}.attention.norm", c),
                              "qkv": r.linear(f"{layer}.attention.qkv", c, 3 * c),
                              "proj": r.linear(f"{layer}.attention.proj", c, c)},
                "mlp": {"norm": r.norm(f"{layer}.mlp.norm", c),
                        "main_0": r.linear(f"{layer}.mlp.main.0", c, hidden),
                        "main_2": r.linear(f"{layer}.mlp.main.2", hidden, c)},
            }
        params[f"blocks_{i}"] = block
    params["var"] = r.get("var", t, d)
    r.finish()
    return params
