"""TARFlow / iTARFlow sampling in JAX: the decoding loops and the port's `make_generate`.

The sampler of `adapters.tarflow.sampler` on the Flax network of
`adapters.tarflow.jax_network`, pass for pass:

* sequential decoding, one token per step with per-layer key/value caches, inside one
  `jax.lax.fori_loop` per flow block, so the compiled graph does not grow with the number
  of tokens T (the loops over blocks and layers are unrolled at trace time);
* Jacobi and Gauss-Seidel-Jacobi decoding: `jax.lax.while_loop`s of parallel causal passes
  (one per segment of a block, unrolled over segments), stopped at a tolerance or an
  iteration cap, with the pass counts returned when asked (`make_generate(with_stats=True)`);
* classifier-free guidance with the unconditional pass (mean class embedding, attention
  temperature) stacked under the conditional one in the same batch, constant or annealed
  (`adapters.tarflow.guidance`, shared with torch);
* the score-based denoising step ``x + sigma^2 * grad log p(x | y)`` through `jax.grad`.

This module is the family's port (`ModelSpec.jax_port`): `convert_params`, `make_generate`,
`make_generate_with_stats`, `iteration_stats`, `FAMILY_OPTIONS` and `load` are what
`adapters.jax.sampler` reads of it.

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

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adapters.jax.layers import patchify, unpatchify
from adapters.jax.sampler import port_loader
from adapters.tarflow.config import TARFlowConfig
from adapters.tarflow.gsjacobi import (
    GS_JACOBI,
    NOISE,
    SEQUENTIAL,
    BlockSchedule,
    resolve_schedules,
    summarize_iterations,
)
from adapters.tarflow.guidance import check_guidance_options, guide
from adapters.tarflow.jax_network import MetaBlock, TARFlow, convert_params, exp_float32

__all__ = ["FAMILY_OPTIONS", "convert_params", "iteration_stats", "load", "make_generate", "make_generate_with_stats"]

# The sampling options of `make_generate`, the keyword options of the torch `TARFlowSampler.generate`.
FAMILY_OPTIONS = ("annealed_guidance", "attn_temp", "guide_what", "denoise", "decoding",
                  "jacobi_tol", "jacobi_max_iters", "jacobi_init", "gs_segments")


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
            a, b = guide(a, b, n, g, guide_what)
        nxt = jax.lax.dynamic_index_in_dim(x, i + 1, axis=1, keepdims=False)
        x = jax.lax.dynamic_update_index_in_dim(x, nxt * exp_float32(a) + b, i + 1, axis=1)
        return x, caches

    x, _ = jax.lax.fori_loop(0, t - 1, body, (block.permute(z), caches))
    return block.permute(x)


def _reverse_parallel(block: MetaBlock, z, schedule: BlockSchedule, labels, guidance: float, guide_what: str,
                      attn_temp: float, annealed: bool, tol: float):
    """Noise to data through one block by (Gauss-Seidel-)Jacobi iteration, one while_loop
    per segment of `schedule` (one segment: Jacobi); see
    `adapters.tarflow.network.MetaBlock.reverse_parallel`, which this mirrors pass for pass.
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
                a, b = guide(a, b, n, g[:, lo:hi] if annealed else g, guide_what)
            new = zp[:, lo:hi] * exp_float32(a) + b  # (N, W, D)
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
        `adapters.tarflow.sampler.TARFlowSampler.generate` (per-block values as tuples, so
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
        guidance = check_guidance_options(name, guidance, attn_temp, guide_what)
        denoise = config.denoise if denoise is None else denoise
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
            return unpatchify(x, config.patch_size, (config.img_size, config.img_size)), tuple(passes)

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
