"""TARFlow / iTARFlow in Flax (flax.linen): the network, torch weight conversion and sampling.

A port of `adapters.tarflow` (which follows apple/ml-tarflow name for name): the same
pre-norm causal transformer blocks, the same parameter tree (``blocks_0/attn_blocks_1/
attention/qkv`` is torch's ``blocks.0.attn_blocks.1.attention.qkv``) and the same sampler:

* sequential decoding, one token per step with per-layer key/value caches, inside one
  `jax.lax.fori_loop` per flow block, so the compiled graph does not grow with the number
  of tokens T (the loops over blocks and layers are unrolled at trace time);
* Jacobi and Gauss-Seidel-Jacobi decoding: `jax.lax.while_loop`s of parallel causal passes
  (one per segment of a block, unrolled over segments), stopped at a tolerance or an
  iteration cap, with the pass counts returned when asked (`make_generate(with_stats=True)`);
* classifier-free guidance with the unconditional pass (mean class embedding, attention
  temperature) stacked under the conditional one in the same batch, constant or annealed;
* the score-based denoising step ``x + sigma^2 * grad log p(x | y)`` through `jax.grad`.

Half precision follows the torch code: layer norms normalise and log-scales are
exponentiated in float32, then cast back.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from adapters import load_sampler
    >>> s = load_sampler("tarflow", img_size=8, in_channels=3, patch_size=2, channels=64,
    ...                  num_blocks=2, layers_per_block=2, num_classes=10)
    >>> params = convert_params(s.net.state_dict(), s.config, "tarflow")
    >>> generate = jax.jit(make_generate(s.config, "tarflow"),
    ...                    static_argnames=("guidance",) + FAMILY_OPTIONS)
    >>> x = generate(params, jnp.zeros((2, 3, 8, 8)), jnp.array([3, 7]), guidance=1.5,
    ...              annealed_guidance=True)
    >>> x.shape
    (2, 3, 8, 8)
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adapters.api.errors import InputError
from adapters.api.sampler import check_guidance
from adapters.jax.convert import StateDictReader
from adapters.jax.sampler import port_loader
from adapters.tarflow.gsjacobi import (
    GS_JACOBI,
    NOISE,
    SEQUENTIAL,
    BlockSchedule,
    resolve_schedules,
    summarize_iterations,
)
from adapters.tarflow.model import TARFlowConfig

FAMILY_OPTIONS = ("annealed_guidance", "attn_temp", "guide_what", "denoise", "decoding",
                  "jacobi_tol", "jacobi_max_iters", "jacobi_init", "gs_segments")

_LN_EPS = 1e-5  # torch's LayerNorm default (Flax's is 1e-6)


def _exp(a: jax.Array) -> jax.Array:
    # As the torch code: exponentiate half-precision log-scales in float32.
    return jnp.exp(a.astype(jnp.float32)).astype(a.dtype)


def patchify(x: jax.Array, p: int) -> jax.Array:
    """(N, C, H, W) -> (N, T, C*p*p) in `F.unfold` order: tokens row-major over the patch
    grid, features channel-major (c, row in patch, column in patch)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)  # (N, H/p, W/p, C, p, p)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: jax.Array, p: int, size: int) -> jax.Array:
    """(N, T, C*p*p) -> (N, C, H, W) with H = W = size; the inverse of `patchify`."""
    n, _, d = tokens.shape
    c, g = d // (p * p), size // p
    x = tokens.reshape(n, g, g, c, p, p).transpose(0, 3, 1, 4, 2, 5)  # (N, C, H/p, p, W/p, p)
    return x.reshape(n, c, size, size)


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
    """One autoregressive flow block; see `adapters.tarflow.model.MetaBlock`. Sequences passed
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
        z = (xp - b) * _exp(-a)
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
        z = patchify(x, self.config.patch_size)
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
        state_dict: torch tensors named as `adapters.tarflow.model.TARFlow` (and apple/ml-tarflow)
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


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------


def _guide(a, b, n: int, g, guide_what: str):
    """Conditional rows [:n] pushed away from the unconditional rows [n:]: a += g (a - a_u)."""
    a_c, a_u, b_c, b_u = a[:n], a[n:], b[:n], b[n:]
    if "a" in guide_what:
        a_c = a_c + g * (a_c - a_u)
    if "b" in guide_what:
        b_c = b_c + g * (b_c - b_u)
    return a_c, b_c


def _guided_inputs(block: MetaBlock, labels, n: int, guided: bool, attn_temp: float, dtype):
    """Class terms (rows, 1, C) and per-row query scales (rows, 1, 1, 1) or None, with the
    unconditional rows stacked under the conditional ones when guided."""
    cls = block.class_term(labels, n)
    if not guided:
        return cls, None
    if cls is not None:
        cls = jnp.concatenate([cls, block.class_term(None, n)])  # (2N, 1, C)
    if attn_temp == 1.0:
        return cls, None
    q_scale = jnp.concatenate([jnp.ones((n, 1, 1, 1), dtype), jnp.full((n, 1, 1, 1), 1.0 / attn_temp, dtype)])
    return cls, q_scale


def _reverse_sequential(block: MetaBlock, z, labels, guidance: float, guide_what: str, attn_temp: float,
                        annealed: bool):
    """Noise to data through one (bound) block, token by token with key/value caches in one
    fori_loop. z: (N, T, D) in natural order -> x (N, T, D)."""
    n, t, _ = z.shape
    c = block.config
    guided = guidance > 0 and bool(guide_what)
    rows = 2 * n if guided else n
    cls, q_scale = _guided_inputs(block, labels, n, guided, attn_temp, z.dtype)
    if cls is not None:
        cls = cls[:, 0]  # (rows, C)
    heads = c.channels // c.head_dim
    caches = [(jnp.zeros((rows, heads, t, c.head_dim), z.dtype),) * 2 for _ in range(c.layers_per_block)]

    def body(i, carry):
        x, caches = carry
        tok = jax.lax.dynamic_index_in_dim(x, i, axis=1, keepdims=False)  # (N, D)
        if guided:
            tok = jnp.concatenate([tok, tok])  # (2N, D)
        a, b, caches = block.step(tok, i, caches, cls, q_scale)  # (rows, D) each
        if guided:
            g = ((i + 1).astype(jnp.float32) / (t - 1) * guidance).astype(z.dtype) if annealed else guidance
            a, b = _guide(a, b, n, g, guide_what)
        nxt = jax.lax.dynamic_index_in_dim(x, i + 1, axis=1, keepdims=False)
        x = jax.lax.dynamic_update_index_in_dim(x, nxt * _exp(a) + b, i + 1, axis=1)
        return x, caches

    x, _ = jax.lax.fori_loop(0, t - 1, body, (block.permute(z), caches))
    return block.permute(x)


def _reverse_parallel(block: MetaBlock, z, schedule: BlockSchedule, labels, guidance: float, guide_what: str,
                      attn_temp: float, annealed: bool, tol: float):
    """Noise to data through one block by (Gauss-Seidel-)Jacobi iteration, one while_loop
    per segment of `schedule` (one segment: Jacobi); see
    `adapters.tarflow.model.MetaBlock.reverse_parallel`, which this mirrors pass for pass.
    z: (N, T, D) -> (x (N, T, D), passes per segment (S,) int32)."""
    n, t, _ = z.shape
    c = block.config
    guided = guidance > 0 and bool(guide_what)
    zp = block.permute(z)
    cls, q_scale = _guided_inputs(block, labels, n, guided, attn_temp, z.dtype)
    g = guidance
    if guided and annealed:
        # token j is parameterised at step j - 1, whose annealed scale is j / (T - 1)
        g = guidance * jnp.arange(t, dtype=z.dtype).reshape(1, t, 1) / (t - 1)
    rows = 2 * n if guided else n
    heads = c.channels // c.head_dim
    cached = t if len(schedule.segments) > 1 else 0  # one segment (Jacobi) attends to no cache
    caches = [(jnp.zeros((rows, heads, cached, c.head_dim), z.dtype),) * 2 for _ in range(c.layers_per_block)]
    x = zp if schedule.init == NOISE else zp.at[:, 1:].set(0)
    passes = []
    for s, ((lo, hi), cap) in enumerate(zip(schedule.segments, schedule.max_iters)):
        more = s + 1 < len(schedule.segments)  # later segments attend to this one's tokens

        def cond(state, cap=cap):
            done, _, _, active = state
            return (done < cap) & active.any()

        def body(state, lo=lo, hi=hi, more=more):
            done, x, caches, active = state
            inp = x[:, lo - 1:hi - 1]  # (N, W, D)
            a, b, window_kv = block.affine_window(jnp.concatenate([inp, inp]) if guided else inp, lo - 1, caches,
                                                  cls, q_scale)
            if guided:
                a, b = _guide(a, b, n, g[:, lo:hi] if annealed else g, guide_what)
            new = zp[:, lo:hi] * _exp(a) + b  # (N, W, D)
            moved = jnp.abs(new - x[:, lo:hi]).max(axis=(1, 2)).astype(jnp.float32)  # (N,)
            x = x.at[:, lo:hi].set(jnp.where(active[:, None, None], new, x[:, lo:hi]))
            if more:
                keep = (jnp.concatenate([active, active]) if guided else active)[:, None, None, None]
                caches = [(k_cache.at[:, :, lo - 1:hi - 1].set(jnp.where(keep, k, k_cache[:, :, lo - 1:hi - 1])),
                           v_cache.at[:, :, lo - 1:hi - 1].set(jnp.where(keep, v, v_cache[:, :, lo - 1:hi - 1])))
                          for (k_cache, v_cache), (k, v) in zip(caches, window_kv)]
            return done + 1, x, caches, active & (moved > tol)

        done, x, caches, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), x, caches, jnp.ones(n, bool)))
        passes.append(done)
    return block.permute(x), jnp.stack(passes)


def make_generate(config: TARFlowConfig, family: str = "tarflow", *, name: str | None = None,
                  with_stats: bool = False) -> Callable:
    """The sampling function for `config`, to be jitted with the options static.

    Args:
        config: the `TARFlowConfig` of the converted weights.
        family: the model family ("tarflow"; iTARFlow is the same family).
        name: the model id error messages start with (default: `family`).
        with_stats: also return the decoding passes, as the torch sampler's `last_stats`
            holds them (`iteration_stats`).

    Returns:
        ``generate(params, noise, labels, *, guidance, annealed_guidance=False, attn_temp=1.0,
        guide_what="ab", denoise=None, decoding="sequential", jacobi_tol=1e-4,
        jacobi_max_iters=None, jacobi_init=None, gs_segments=None) -> x`` (with
        `with_stats`: ``(x, passes)``, passes a tuple of (segments,) int32 arrays, block 0
        first): `params` from `convert_params` (cast to the compute dtype), noise (N, C, H,
        W), labels int (N,) or None; the options mean what they mean for
        `adapters.tarflow.model.TARFlowSampler.generate` (per-block values as tuples, so
        they hash as static arguments), and bad ones raise InputError at trace time.
        Returns samples (N, C, H, W) in the noise's dtype.

    Example::

        generate = jax.jit(make_generate(cfg, "itarflow-b2"),
                           static_argnames=("guidance",) + FAMILY_OPTIONS)
        x = generate(params, noise, labels, guidance=1.5, annealed_guidance=True)
    """
    net = TARFlow(config)
    name = name or family

    def generate(params, noise, labels, *, guidance: float, annealed_guidance: bool = False,
                 attn_temp: float = 1.0, guide_what: str = "ab", denoise: bool | None = None,
                 decoding: str = SEQUENTIAL, jacobi_tol: float = 1e-4, jacobi_max_iters=None,
                 jacobi_init=None, gs_segments=None):
        guidance = check_guidance(name, guidance)
        denoise = config.denoise if denoise is None else denoise
        if guidance < 0:
            raise InputError(f"{name}: guidance must be >= 0, got {guidance}")
        if attn_temp <= 0:
            raise InputError(f"{name}: attn_temp must be positive, got {attn_temp}")
        if not set(guide_what) <= {"a", "b"}:
            raise InputError(f"{name}: guide_what must be made of 'a' and 'b', got {guide_what!r}")
        schedules = resolve_schedules(name, config.num_blocks, config.num_patches, decoding=decoding,
                                      jacobi_tol=jacobi_tol, jacobi_max_iters=jacobi_max_iters,
                                      jacobi_init=jacobi_init, gs_segments=gs_segments)

        def reverse(net: TARFlow, noise, labels):
            x = patchify(noise, config.patch_size) * jnp.sqrt(net.var)  # (N, T, D)
            passes = [None] * config.num_blocks
            for index in reversed(range(config.num_blocks)):
                block = net.blocks[index]
                if schedules is None:
                    x = _reverse_sequential(block, x, labels, guidance, guide_what, attn_temp, annealed_guidance)
                    passes[index] = jnp.full((1,), config.num_patches - 1, jnp.int32)
                else:
                    x, passes[index] = _reverse_parallel(block, x, schedules[index], labels, guidance, guide_what,
                                                         attn_temp, annealed_guidance, jacobi_tol)
            return unpatchify(x, config.patch_size, config.img_size), tuple(passes)

        variables = {"params": params}
        x, passes = nn.apply(reverse, net)(variables, noise, labels)
        if denoise and config.noise_std > 0:
            # Tweedie's estimate: training added N(0, sigma^2) noise to the data.
            def total_log_prob(x):
                return net.apply(variables, x, labels, method=TARFlow.log_prob).sum()
            x = x + config.noise_std**2 * jax.grad(total_log_prob)(x)
        return (x, passes) if with_stats else x

    return generate


def make_generate_with_stats(config: TARFlowConfig, family: str = "tarflow", *, name: str | None = None) -> Callable:
    """`make_generate(..., with_stats=True)`; `adapters.jax.sampler` looks for this name."""
    return make_generate(config, family, name=name, with_stats=True)


def iteration_stats(passes, options: dict) -> dict:
    """``passes`` from a `with_stats` generate (host or device arrays) and the generate
    options -> the torch sampler's `last_stats` entries (JSON-serialisable)."""
    per_segment = [[int(i) for i in np.asarray(block)] for block in passes]
    gs = options.get("decoding") == GS_JACOBI
    return summarize_iterations([sum(block) for block in per_segment], per_segment if gs else None)


load = port_loader(__name__)  # what load_sampler(..., backend="jax") calls
