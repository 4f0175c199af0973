"""SiT in Flax: a port of `adapters.sit.model` on the Flax DiT of `adapters.flowmatch.jax_port`.

`convert_params` turns the torch adapter's state_dict (learned sigma already dropped at
load) into the Flax DiT's params, and `make_generate` returns SiT's ODE sampler as one pure
function for `jax.jit`, with the torch sampler's semantics and input checks: ``num_steps``
steps from t = 0 (noise) to t = 1 (data), ``solver`` "euler" or "heun" (torchdiffeq's
heun2), guidance at SiT's scale w = 1 + g on the first three channels in one doubled batch.
The steps run under `jax.lax.scan`, so a compiled sampler holds one copy of the network
whatever `num_steps` is.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from adapters import load_sampler
    >>> s = load_sampler("sit-b2", hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10)
    >>> params = convert_params(s.net.state_dict(), s.config, "sit-b2")
    >>> generate = jax.jit(make_generate(s.config, "sit"), static_argnames=("guidance", *FAMILY_OPTIONS))
    >>> generate(params, jnp.zeros((2, 4, 8, 8)), jnp.array([1, 2]), guidance=0.5, num_steps=2).shape
    (2, 4, 8, 8)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from adapters.api.sampler import check_guidance
from adapters.base import check_guided_labels, check_num_steps
from adapters.flowmatch import jax_port as dit
from adapters.jax.layers import scale_by
from adapters.jax.sampler import port_loader
from adapters.sit.model import (
    FAMILY,
    GUIDED_CHANNELS,
    SiTConfig,
    check_solver,
)

FAMILY_OPTIONS = ("num_steps", "solver")


def convert_params(state_dict: Mapping[str, Any], config: SiTConfig, what: str) -> dict:
    """The torch adapter's `net` state_dict -> params of the Flax DiT (``{"params": ...}``'s value).

    Args:
        state_dict: tensors of `adapters.sit.model.SiTSampler.net` (C output channels).
        config: the torch adapter's `SiTConfig`.
        what: the model's name, for errors.

    Raises:
        InputError naming every missing, unexpected and mis-shaped tensor.

    Example::

        >>> from adapters import load_sampler
        >>> s = load_sampler("sit-b2", hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10)
        >>> sorted(convert_params(s.net.state_dict(), s.config, "sit-b2"))[:3]
        ['blocks_0', 'blocks_1', 'final_layer']
    """
    return dit.convert_params(state_dict, config, what, family="rectified-flow")  # SiT's net: the RF DiT, raw t


def make_generate(config: SiTConfig, family: str = FAMILY, *, name: str | None = None) -> Callable[..., jax.Array]:
    """SiT's sampler as ``generate(params, noise, labels, *, guidance, num_steps=None, solver=None) -> x``.

    Args:
        config: the torch adapter's `SiTConfig` (sizes, default steps and solver).
        family: ``"sit"`` (`ModelInfo.family`).
        name: the model's name in error messages (default: `family`).

    `generate` takes params from `convert_params` in the dtype of `noise` (N, C, H, W),
    float32 or bfloat16; labels int (N,) or None (the null class); guidance a float (0 =
    none), num_steps a positive int and solver "euler" or "heun" (None: the config's), all
    static under `jax.jit`. Invalid options raise InputError while tracing, with the torch
    sampler's messages.
    """
    if family != FAMILY:
        raise ValueError(f"family must be {FAMILY!r}, got {family!r}")
    name = name or family
    net = dit.make_dit(config, two_times=False, time_scale=1.0)  # SiT's net: the RF DiT on raw t
    null_class = config.num_classes

    def generate(params: Mapping[str, Any], noise: jax.Array, labels: jax.Array | None, *, guidance: float,
                 num_steps: int | None = None, solver: str | None = None) -> jax.Array:
        g = check_guidance(name, guidance)
        check_guided_labels(name, g, labels)
        k = check_num_steps(name, config.num_steps if num_steps is None else num_steps)
        solver = check_solver(name, config.solver if solver is None else solver)
        n = noise.shape[0]

        def velocity(x: jax.Array, t: jax.Array) -> jax.Array:
            if g == 0.0 or labels is None:
                return net.apply({"params": params}, x, jnp.full((n,), t), labels)
            both = jnp.concatenate([labels, jnp.full_like(labels, null_class)])  # (2N,)
            v = net.apply({"params": params}, jnp.concatenate([x, x]), jnp.full((2 * n,), t), both)  # (2N, C, H, W)
            v_c, v_u = v[:n], v[n:]
            c = GUIDED_CHANNELS
            guided = v_u[:, :c] + scale_by(v_c[:, :c] - v_u[:, :c], 1.0 + g)  # (N, 3, H, W)
            return jnp.concatenate([guided, v_c[:, c:]], axis=1)

        # The torch grid: float64 times 0 = t_0 < ... < t_k = 1, rounded to float32 as torch's
        # time tensors and scalar products round them.
        times = np.linspace(0.0, 1.0, k + 1)
        t_now, t_next = times[:-1].astype(np.float32), times[1:].astype(np.float32)  # (k,) each
        delta = (times[1:] - times[:-1]).astype(np.float32)  # (k,)

        def step(x: jax.Array, ts: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, None]:
            t, t1, dt = ts
            k1 = velocity(x, t)
            if solver == "euler":
                return x + scale_by(k1, dt), None
            k2 = velocity(x + scale_by(k1, dt), t1)  # heun2: stage 2 at t + dt from the Euler point
            return x + scale_by(scale_by(k1, 0.5) + scale_by(k2, 0.5), dt), None

        x, _ = jax.lax.scan(step, noise, (t_now, t_next, delta))
        return x  # (N, C, H, W)

    return generate


load = port_loader(__name__)  # what load_sampler(..., backend="jax") calls
