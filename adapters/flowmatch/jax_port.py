"""Rectified Flow on the DiT backbone, in Flax: a port of `adapters.flowmatch.model`.

`convert_params` turns the torch `DiT`'s state_dict into this module's params (with or
without MeanFlow's interval embedder, for the ports built on this DiT: SiT's and the
official MeanFlow's), and `make_generate` returns Rectified Flow's sampler as one pure
function for `jax.jit`, with the torch sampler's semantics and input checks: k-step Euler
from t = 1 (noise) to t = 0 on the velocity field, guided as v = v_c + g * (v_c - v_u) in
one doubled batch (null class = num_classes).

The steps run under `jax.lax.scan`, so a compiled sampler holds one copy of the network
whatever `num_steps` is.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from adapters import load_sampler
    >>> s = load_sampler("rf-mini", hidden_size=64, depth=2, num_heads=4)
    >>> params = convert_params(s.net.state_dict(), s.config, "rf-mini")
    >>> generate = jax.jit(make_generate(s.config, "rectified-flow"), static_argnames=("guidance", "num_steps"))
    >>> generate(params, jnp.zeros((2, 3, 8, 8)), jnp.array([1, 2]), guidance=1.5, num_steps=2).shape
    (2, 3, 8, 8)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from adapters.api.errors import InputError
from adapters.api.sampler import check_guidance
from adapters.base import check_guided_labels, check_num_steps
from adapters.flowmatch.model import FAMILY, DiTSize, FlowMatchConfig
from adapters.jax.convert import StateDictReader
from adapters.jax.layers import (
    LabelEmbedder,
    TimestepEmbedder,
    TransformerBlock,
    convert_block,
    convert_label_embedder,
    convert_timestep_embedder,
    layer_norm,
    modulate,
    scale_by,
)
from adapters.jax.sampler import port_loader

FAMILY_OPTIONS = ("num_steps",)
# The two DiTs `convert_params` reads: without and with MeanFlow's interval embedder `h_embedder`
# (the latter is the network of adapters/meanflow).
FAMILIES = (FAMILY, "meanflow")


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map to p*p*C values per token."""

    hidden_size: int
    out_features: int

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        mod = nn.Dense(2 * self.hidden_size, name="adaLN_modulation")(nn.silu(c))  # (N, 2D)
        shift, scale = jnp.split(mod, 2, axis=-1)  # (N, D) each
        return nn.Dense(self.out_features, name="linear")(modulate(layer_norm(x), shift, scale))  # (N, T, p*p*C)


class DiT(nn.Module):
    """`adapters.flowmatch.model.DiT` in Flax: x (N, C, H, W), t (N,) in [0, 1], y (N,) labels or None
    (null class), h (N,) the MeanFlow interval (iff `two_times`) -> (N, C, H, W)."""

    input_size: int
    patch_size: int
    in_channels: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float
    num_classes: int
    two_times: bool
    time_scale: float

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array | None, h: jax.Array | None = None) -> jax.Array:
        n, d, p, c_in = x.shape[0], self.hidden_size, self.patch_size, self.in_channels
        g = self.input_size // p
        # The stride-p convolution of DiT's patch embedding, on NHWC; tokens row-major as torch's flatten(2).
        tokens = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", name="x_embedder")(x.transpose(0, 2, 3, 1))
        pos = self.param("pos_embed", nn.initializers.zeros, (1, g * g, d))
        tokens = tokens.reshape(n, g * g, d) + pos.astype(x.dtype)  # (N, T, D)
        c = (TimestepEmbedder(d, scale=self.time_scale, name="t_embedder")(t, x.dtype)
             + LabelEmbedder(self.num_classes, d, name="y_embedder")(y, n))  # (N, D)
        if self.two_times:
            c = c + TimestepEmbedder(d, scale=self.time_scale, name="h_embedder")(h, x.dtype)
        mlp_hidden = int(d * self.mlp_ratio)
        for i in range(self.depth):
            tokens = TransformerBlock(d, self.num_heads, mlp_hidden, adaln=True, name=f"blocks_{i}")(tokens, c)
        out = FinalLayer(d, p * p * c_in, name="final_layer")(tokens, c)  # (N, T, p*p*C)
        # DiT's unpatchify: tokens hold (p, q, c) values of a (row, col) patch.
        out = out.reshape(n, g, g, p, p, c_in)
        return jnp.einsum("nhwpqc->nchpwq", out).reshape(n, c_in, g * p, g * p)


def make_dit(config: DiTSize, *, two_times: bool, time_scale: float) -> DiT:
    """The Flax `DiT` of a config's size fields (`adapters.flowmatch.model.DiT.from_size`'s)."""
    return DiT(input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
               hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads,
               mlp_ratio=config.mlp_ratio, num_classes=config.num_classes, two_times=two_times,
               time_scale=time_scale)


def convert_params(state_dict: Mapping[str, Any], config: DiTSize, what: str,
                   family: str | None = None) -> dict:
    """The torch `DiT` state_dict -> params of `DiT` (the value of ``{"params": ...}``).

    Args:
        state_dict: tensors of the torch adapter's `net` (any dtype; converted to float32 numpy).
        config: the torch adapter's config (its `DiTSize` fields are read).
        what: the model's name, for errors.
        family: ``"meanflow"`` expects the interval embedder `h_embedder`, ``"rectified-flow"``
            refuses it; None (default) decides by its presence in the state_dict.
            ``pos_embed`` is read from the state_dict either way (a port whose torch DiT
            computes its positions adds them).

    Raises:
        InputError naming every missing, unexpected and mis-shaped tensor.

    Example::

        >>> from adapters import load_sampler
        >>> s = load_sampler("rf-mini", hidden_size=64, depth=2, num_heads=4)
        >>> sorted(convert_params(s.net.state_dict(), s.config, "rf-mini"))[:3]
        ['blocks_0', 'blocks_1', 'final_layer']
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    meanflow = "h_embedder.mlp.0.weight" in state_dict if family is None else family == "meanflow"
    r = StateDictReader(state_dict, what)
    d, p, c_in = config.hidden_size, config.patch_size, config.in_channels
    tokens = (config.input_size // p) ** 2
    params = {
        "x_embedder": r.conv("x_embedder.proj", c_in, d, p),
        "pos_embed": r.get("pos_embed", 1, tokens, d),
        "t_embedder": convert_timestep_embedder(r, "t_embedder", d),
        "y_embedder": convert_label_embedder(r, "y_embedder", config.num_classes, d),
        "final_layer": {"adaLN_modulation": r.linear("final_layer.adaLN_modulation.1", d, 2 * d),
                        "linear": r.linear("final_layer.linear", d, p * p * c_in)},
    }
    if meanflow:
        params["h_embedder"] = convert_timestep_embedder(r, "h_embedder", d)
    mlp_hidden = int(d * config.mlp_ratio)
    for i in range(config.depth):
        params[f"blocks_{i}"] = convert_block(r, f"blocks.{i}", d, mlp_hidden, config.num_heads, adaln=True)
    r.finish()
    return params


def make_generate(config: FlowMatchConfig, family: str = FAMILY, *,
                  name: str | None = None) -> Callable[..., jax.Array]:
    """Rectified Flow's sampler as ``generate(params, noise, labels, *, guidance, num_steps=None) -> x``.

    Args:
        config: the torch adapter's `FlowMatchConfig` (sizes, default steps, time scale).
        family: ``"rectified-flow"`` (`ModelInfo.family`).
        name: the model's name in error messages (default: `family`).

    `generate` takes params from `convert_params` in the dtype of `noise` (N, C, H, W),
    float32 or bfloat16; labels int (N,) or None (the null class); guidance a float (0 =
    none) and num_steps a positive int or None (config.num_steps), both static under
    `jax.jit`. Invalid options raise InputError while tracing, with the torch sampler's messages.
    """
    if family != FAMILY:
        raise ValueError(f"family must be {FAMILY!r}, got {family!r}")
    name = name or family
    net = make_dit(config, two_times=False, time_scale=config.time_scale)
    null_class = config.num_classes

    def generate(params: Mapping[str, Any], noise: jax.Array, labels: jax.Array | None, *, guidance: float,
                 num_steps: int | None = None) -> jax.Array:
        g = check_guidance(name, guidance)
        check_guided_labels(name, g, labels)
        k = check_num_steps(name, config.num_steps if num_steps is None else num_steps)
        if "h_embedder" in params:
            raise InputError(f"{name}: these params are a MeanFlow network's (with h_embedder), not a {family} one's "
                             f"(convert with family={family!r})")
        n = noise.shape[0]
        # The torch grid: float64 times 1 = t_0 > ... > t_k = 0; network times and step sizes
        # rounded to float32 as torch's time tensors and scalar products are.
        times = np.linspace(1.0, 0.0, k + 1)
        t_now = times[:-1].astype(np.float32)  # (k,)
        delta = (times[:-1] - times[1:]).astype(np.float32)  # (k,) t - t_next > 0

        def step(x: jax.Array, ts: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
            t, dt = ts
            if g == 0.0 or labels is None:
                v = net.apply({"params": params}, x, jnp.full((n,), t), labels)
            else:
                both = jnp.concatenate([labels, jnp.full_like(labels, null_class)])  # (2N,)
                v = net.apply({"params": params}, jnp.concatenate([x, x]), jnp.full((2 * n,), t), both)
                v_c, v_u = v[:n], v[n:]
                v = v_c + scale_by(v_c - v_u, g)
            return x - scale_by(v, dt), None  # x + (t_next - t) * v

        x, _ = jax.lax.scan(step, noise, (t_now, delta))
        return x  # (N, C, H, W)

    return generate


load = port_loader(__name__)  # what load_sampler(..., backend="jax") calls
