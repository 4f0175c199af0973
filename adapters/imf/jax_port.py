"""iMF in Flax (flax.linen): a port of `adapters.imf.model`, shared with pMF (`adapters.pmf.jax_port`).

`convert_params` turns the torch `IMFDiT`'s state_dict into this module's params (the same
tree: torch's ``shared_blocks.3.attn.q_proj`` is ``shared_blocks_3/attn/q_proj``), and
`make_generate` returns the sampler as one pure function for `jax.jit`, with the torch
sampler's semantics and input checks: k steps z <- z - (t - r) u from t = 1 to 0 on the
float32 grid torch makes, guidance an input of the network (omega = 1 + g). The steps run
under `jax.lax.scan`, so a compiled sampler holds one copy of the network whatever k is.
The rotary tables are the torch module's (computed by the same functions).

Half precision follows the torch code: RMSNorm statistics, the sinusoids, the rotations and
the attention softmax in float32, the rest in the parameters' dtype.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from adapters import load_sampler
    >>> s = load_sampler("imf-b2", hidden_size=64, depth=2, num_heads=4, head_depth=1, input_size=8,
    ...                  num_classes=10)
    >>> params = convert_params(s.net.state_dict(), s.config, "imf-b2")
    >>> generate = jax.jit(make_generate(s.config, "imf"), static_argnames=("guidance",) + FAMILY_OPTIONS)
    >>> generate(params, jnp.zeros((2, 4, 8, 8)), jnp.array([1, 2]), guidance=2.0, num_steps=2).shape
    (2, 4, 8, 8)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import torch
from flax import linen as nn

from adapters.api.errors import InputError
from adapters.base import check_num_steps
from adapters.imf.model import (
    CONDITION_TOKENS,
    FAMILY,
    IMFConfig,
    MeanFlowDiTConfig,
    check_interval,
    check_mean_flow_guidance,
    mlp_hidden,
    resolve_defaults,
    sequence_rope,
)
from adapters.jax.convert import StateDictReader
from adapters.jax.layers import (
    LabelEmbedder,
    RMSNorm,
    TimestepEmbedder,
    convert_label_embedder,
    convert_timestep_embedder,
    scale_by,
)
from adapters.jax.sampler import port_loader

FAMILY_OPTIONS = ("guidance_interval", "num_steps")
EMBEDDERS = ("h_embedder", "omega_embedder", "cfg_t_start_embedder", "cfg_t_end_embedder")


def apply_pair_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate channel pairs (2j, 2j+1) of the last R = cos.shape[0] tokens of x (N, S, H, d) by
    tables (R, d/2), in float32; earlier tokens pass unchanged (`adapters.imf.model.apply_pair_rope`)."""
    n, s, h, d = x.shape
    keep, rot = s - cos.shape[0], cos.shape[0]
    pairs = x[:, keep:].astype(jnp.float32).reshape(n, rot, h, d // 2, 2)  # (N, R, H, d/2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    c, sn = cos[:, None], sin[:, None]  # (R, 1, d/2)
    turned = jnp.stack([a * c - b * sn, a * sn + b * c], axis=-1).reshape(n, rot, h, d).astype(x.dtype)
    return jnp.concatenate([x[:, :keep], turned], axis=1)


class Attention(nn.Module):
    """Bias-free q/k/v/out projections, qk RMSNorm per head, rotary positions, float32 softmax."""

    dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
        n, s, d = x.shape
        hd = d // self.num_heads

        def heads(name: str) -> jax.Array:
            return nn.Dense(d, use_bias=False, name=name)(x).reshape(n, s, self.num_heads, hd)  # (N, S, H, d)

        q = apply_pair_rope(RMSNorm(hd, name="q_norm")(heads("q_proj")), *rope)
        k = apply_pair_rope(RMSNorm(hd, name="k_norm")(heads("k_proj")), *rope)
        out = jax.nn.dot_product_attention(q, k, heads("v_proj"))  # (N, S, H, d)
        return nn.Dense(d, use_bias=False, name="out_proj")(out.reshape(n, s, d))  # (N, S, D)


class SwiGLU(nn.Module):
    dim: int
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        a = nn.Dense(self.hidden, use_bias=False, name="w1")(x)
        b = nn.Dense(self.hidden, use_bias=False, name="w3")(x)
        return nn.Dense(self.dim, use_bias=False, name="w2")(nn.silu(a) * b)


class Block(nn.Module):
    """Pre-norm block with per-channel residual gates `attn_scale` and `mlp_scale`."""

    dim: int
    num_heads: int
    mlp_hidden: int

    @nn.compact
    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
        attn_scale = self.param("attn_scale", nn.initializers.zeros, (self.dim,))
        mlp_scale = self.param("mlp_scale", nn.initializers.zeros, (self.dim,))
        x = x + Attention(self.dim, self.num_heads, name="attn")(RMSNorm(self.dim, name="norm1")(x), rope) * attn_scale
        return x + SwiGLU(self.dim, self.mlp_hidden, name="mlp")(RMSNorm(self.dim, name="norm2")(x)) * mlp_scale


class Net(nn.Module):
    """`adapters.imf.model.IMFDiT` (and pMF's subclass) in Flax.

    `bottleneck` > 0 selects pMF's two-convolution patch embedding, `learned_positions` its
    position table, `x_prediction` its output map u = (x - net) / max(t, 0.05).
    `__call__(x, t, h, omega, t_min, t_max, y, rope)` -> u (N, C, H, W); y None is the null class."""

    input_size: int
    patch_size: int
    in_channels: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_hidden: int
    num_classes: int
    head_depth: int
    bottleneck: int = 0
    learned_positions: bool = False
    x_prediction: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, h: jax.Array, omega: jax.Array, t_min: jax.Array,
                 t_max: jax.Array, y: jax.Array | None, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
        n, d, p, c_in = x.shape[0], self.hidden_size, self.patch_size, self.in_channels
        g = self.input_size // p
        nhwc = x.transpose(0, 2, 3, 1)
        if self.bottleneck:
            mid = nn.Conv(self.bottleneck, (p, p), strides=(p, p), padding="VALID", name="x_embedder_proj1")(nhwc)
            patches = nn.Conv(d, (1, 1), name="x_embedder_proj2")(mid)
        else:
            patches = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", name="x_embedder_proj")(nhwc)
        patches = patches.reshape(n, g * g, d)  # (N, T, D) row-major, as torch's flatten(2)
        scalars = {"h_embedder": h, "omega_embedder": 1 - 1 / omega.astype(jnp.float32),
                   "cfg_t_start_embedder": t_min, "cfg_t_end_embedder": t_max}
        emb = {k: TimestepEmbedder(d, name=k)(v, x.dtype) for k, v in scalars.items()}  # (N, D) each
        by_token = {"class_tokens": LabelEmbedder(self.num_classes, d, name="y_embedder")(y, n),
                    "omega_tokens": emb["omega_embedder"], "t_min_tokens": emb["cfg_t_start_embedder"],
                    "t_max_tokens": emb["cfg_t_end_embedder"], "time_tokens": emb["h_embedder"]}
        prefix = [self.param(name, nn.initializers.zeros, (count, d))[None] + by_token[name][:, None]
                  for name, count in CONDITION_TOKENS]  # (N, n_i, D)
        seq = jnp.concatenate([*prefix, patches], axis=1)  # (N, S, D)
        if self.learned_positions:
            seq = seq + self.param("pos_embed", nn.initializers.zeros, (seq.shape[1], d))[None]
        blocks = [f"shared_blocks_{i}" for i in range(self.depth - self.head_depth)]
        blocks += [f"u_heads_{i}" for i in range(self.head_depth)]
        for block in blocks:
            seq = Block(d, self.num_heads, self.mlp_hidden, name=block)(seq, rope)
        tokens = seq[:, seq.shape[1] - g * g:]  # (N, T, D)
        out = nn.Dense(p * p * c_in, name="u_final_layer_linear")(RMSNorm(d, name="u_final_layer_norm")(tokens))
        out = jnp.einsum("nhwpqc->nchpwq", out.reshape(n, g, g, p, p, c_in)).reshape(n, c_in, g * p, g * p)
        if not self.x_prediction:
            return out  # (N, C, H, W)
        floor = jnp.maximum(t.astype(jnp.float32), 0.05).astype(x.dtype)[:, None, None, None]
        return (x - out) / floor


def _block_params(r: StateDictReader, prefix: str, d: int, hidden: int, num_heads: int) -> dict:
    hd = d // num_heads
    attn = {k: r.linear(f"{prefix}.attn.{k}", d, d, bias=False) for k in ("q_proj", "k_proj", "v_proj", "out_proj")}
    attn["q_norm"] = r.norm(f"{prefix}.attn.q_norm", hd, bias=False)
    attn["k_norm"] = r.norm(f"{prefix}.attn.k_norm", hd, bias=False)
    return {"attn": attn, "norm1": r.norm(f"{prefix}.norm1", d, bias=False),
            "norm2": r.norm(f"{prefix}.norm2", d, bias=False),
            "mlp": {"w1": r.linear(f"{prefix}.mlp.w1", d, hidden, bias=False),
                    "w3": r.linear(f"{prefix}.mlp.w3", d, hidden, bias=False),
                    "w2": r.linear(f"{prefix}.mlp.w2", hidden, d, bias=False)},
            "attn_scale": r.get(f"{prefix}.attn_scale", d), "mlp_scale": r.get(f"{prefix}.mlp_scale", d)}


def net_params(r: StateDictReader, config: MeanFlowDiTConfig, *, hidden: int, bottleneck: int = 0,
               token_lead: tuple[int, ...] = (), learned_positions: bool = False) -> dict:
    """Params of `Net` read from a torch `IMFDiT` state_dict (pMF: `bottleneck`, (1, n, D) token
    tables as `token_lead=(1,)`, `learned_positions`)."""
    d, p, c_in = config.hidden_size, config.patch_size, config.in_channels
    patches = (config.input_size // p) ** 2
    params: dict[str, Any] = {}
    if bottleneck:
        params["x_embedder_proj1"] = r.conv("x_embedder.proj1", c_in, bottleneck, p)
        params["x_embedder_proj2"] = r.conv("x_embedder.proj2", bottleneck, d, 1)
    else:
        params["x_embedder_proj"] = r.conv("x_embedder.proj", c_in, d, p)
    for name in EMBEDDERS:
        params[name] = convert_timestep_embedder(r, name, d)
    params["y_embedder"] = convert_label_embedder(r, "y_embedder", config.num_classes, d)
    for name, count in CONDITION_TOKENS:
        params[name] = r.get(name, *token_lead, count, d).reshape(count, d)
    if learned_positions:
        length = sum(c for _, c in CONDITION_TOKENS) + patches
        params["pos_embed"] = r.get("pos_embed", 1, length, d)[0]
    for i in range(config.depth - config.head_depth):
        params[f"shared_blocks_{i}"] = _block_params(r, f"shared_blocks.{i}", d, hidden, config.num_heads)
    for i in range(config.head_depth):
        params[f"u_heads_{i}"] = _block_params(r, f"u_heads.{i}", d, hidden, config.num_heads)
    params["u_final_layer_norm"] = r.norm("u_final_layer.norm", d, bias=False)
    params["u_final_layer_linear"] = r.linear("u_final_layer.linear", d, p * p * c_in)
    return params


def convert_params(state_dict: Mapping[str, Any], config: IMFConfig, what: str) -> dict:
    """The torch `IMFDiT` state_dict -> params of `Net` (the value of ``{"params": ...}``).

    The unused ``v_final_layer`` is read past. Raises InputError naming every missing,
    unexpected and mis-shaped tensor.
    """
    r = StateDictReader(state_dict, what, ignore=("v_final_layer.",))
    params = net_params(r, config, hidden=mlp_hidden(config))
    r.finish()
    return params


def make_sampler(net: Net, rope: tuple[torch.Tensor, torch.Tensor], config: MeanFlowDiTConfig, name: str,
                 *, noise_scale: float = 1.0) -> Callable[..., jax.Array]:
    """The k-step sampler of `net` as ``generate(params, noise, labels, *, guidance, guidance_interval=None,
    num_steps=None)``, with the torch sampler's checks and defaults (`config`, resolved)."""
    config = resolve_defaults(config)
    cos, sin = (jnp.asarray(a.numpy()) for a in rope)  # (R, d/2) each

    def generate(params: Mapping[str, Any], noise: jax.Array, labels: jax.Array | None, *, guidance: float,
                 guidance_interval: tuple[float, float] | None = None, num_steps: int | None = None) -> jax.Array:
        g = check_mean_flow_guidance(name, guidance)
        t_min, t_max = check_interval(name, (config.interval_min, config.interval_max) if guidance_interval is None
                                      else guidance_interval)
        k = check_num_steps(name, config.num_steps if num_steps is None else num_steps)
        if ("pos_embed" in params) != net.learned_positions:
            raise InputError(f"{name}: these params are not this family's network (convert them with its port)")
        n = noise.shape[0]

        def scalar(value: float) -> jax.Array:
            return jnp.full((n,), value, jnp.float32)  # (N,)

        omega, lo, hi = scalar(1.0 + g), scalar(t_min), scalar(t_max)
        # The torch sampler's float32 grid, made by torch, and its float32 (t - r).
        times = torch.linspace(1.0, 0.0, k + 1, dtype=torch.float32).numpy()
        t_now, t_next = times[:-1], times[1:]

        def step(z: jax.Array, ts: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
            t, h = ts
            u = net.apply({"params": params}, z, jnp.full((n,), t), jnp.full((n,), h), omega, lo, hi, labels,
                          (cos, sin))
            return z - h.astype(z.dtype) * u, None

        z = scale_by(noise, noise_scale)  # the torch sampler's noise * noise_scale
        z, _ = jax.lax.scan(step, z, (jnp.asarray(t_now), jnp.asarray(t_now - t_next)))
        return z  # (N, C, H, W)

    return generate


def make_generate(config: IMFConfig, family: str = FAMILY, *, name: str | None = None) -> Callable[..., jax.Array]:
    """iMF's sampler as ``generate(params, noise, labels, *, guidance, guidance_interval=None, num_steps=None)``.

    Args:
        config: the torch adapter's `IMFConfig` (sizes, default steps, guidance and interval).
        family: ``"imf"`` (`ModelInfo.family`).
        name: the model's name in error messages (default: `family`).

    `generate` takes params from `convert_params` in the dtype of `noise` (N, 4, H, W),
    float32 or bfloat16; labels int (N,) or None (the null class); guidance g >= 0
    (omega = 1 + g), the interval and num_steps static under `jax.jit`. Invalid options
    raise InputError while tracing, with the torch sampler's messages.
    """
    if family != FAMILY:
        raise ValueError(f"family must be {FAMILY!r}, got {family!r}")
    net = Net(input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
              hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads,
              mlp_hidden=mlp_hidden(config), num_classes=config.num_classes, head_depth=config.head_depth)
    length = sum(c for _, c in CONDITION_TOKENS) + (config.input_size // config.patch_size) ** 2
    rope = sequence_rope(config.hidden_size // config.num_heads, length)
    return make_sampler(net, rope, config, name or family)


load = port_loader(__name__)  # what load_sampler(..., backend="jax") calls
