"""The official MeanFlow in Flax: a port of `adapters.meanflow.model` on the Flax DiT of
`adapters.flowmatch.jax_port` (two times, raw t).

`convert_params` turns the torch adapter's state_dict into the Flax DiT's params (the torch
module computes its positions, which the Flax DiT holds as a constant parameter), and
`make_generate` returns the official sampler as one pure function for `jax.jit`, with the
torch sampler's semantics and input checks: ``num_steps`` steps on linspace(1, 0, k + 1),
each z <- z - (t - r) u(z, t, t - r, y); guidance trained in, so only `config.guidance` is
accepted. The steps run under `jax.lax.scan`, so a compiled sampler holds one copy of the
network whatever `num_steps` is.

``load_sampler("meanflow-b4", checkpoint=FOLDER, backend="jax")`` reads the Orbax folder
through the torch adapter (`adapters.meanflow.checkpoint`) and converts its weights here.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from adapters import load_sampler
    >>> s = load_sampler("meanflow-b4", hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10)
    >>> params = convert_params(s.net.state_dict(), s.config, "meanflow-b4")
    >>> generate = jax.jit(make_generate(s.config), static_argnames=("guidance", *FAMILY_OPTIONS))
    >>> generate(params, jnp.zeros((2, 4, 8, 8)), jnp.array([1, 2]), guidance=1.0, num_steps=2).shape
    (2, 4, 8, 8)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from adapters.api.sampler import check_guidance
from adapters.base import check_num_steps
from adapters.flowmatch import jax_port as dit
from adapters.flowmatch.model import sincos_pos_embed_2d
from adapters.jax.layers import scale_by
from adapters.jax.sampler import port_loader
from adapters.meanflow.model import FAMILY, MeanFlowConfig, check_trained_guidance

FAMILY_OPTIONS = ("num_steps",)


def convert_params(state_dict: Mapping[str, Any], config: MeanFlowConfig, what: str) -> dict:
    """The torch adapter's `net` state_dict -> params of the Flax DiT (``{"params": ...}``'s value).

    Args:
        state_dict: tensors of `adapters.meanflow.model.MeanFlowSampler.net` (no ``pos_embed``:
            the positions are computed, here as in the official forward).
        config: the torch adapter's `MeanFlowConfig`.
        what: the model's name, for errors.

    Raises:
        InputError naming every missing, unexpected and mis-shaped tensor.

    Example::

        >>> from adapters import load_sampler
        >>> s = load_sampler("meanflow-b4", hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10)
        >>> sorted(convert_params(s.net.state_dict(), s.config, "meanflow-b4"))[:4]
        ['blocks_0', 'blocks_1', 'final_layer', 'h_embedder']
    """
    grid = config.input_size // config.patch_size
    positions = sincos_pos_embed_2d(config.hidden_size, grid).unsqueeze(0)  # (1, T, D), as the torch buffer
    return dit.convert_params({**state_dict, "pos_embed": positions}, config, what, family="meanflow")


def make_generate(config: MeanFlowConfig, family: str = FAMILY, *,
                  name: str | None = None) -> Callable[..., jax.Array]:
    """The official sampler as ``generate(params, noise, labels, *, guidance, num_steps=None) -> z``.

    Args:
        config: the torch adapter's `MeanFlowConfig` (sizes, default steps, the trained guidance).
        family: ``"meanflow"`` (`ModelInfo.family`).
        name: the model's name in error messages (default: `family`).

    `generate` takes params from `convert_params` in the dtype of `noise` (N, C, H, W),
    float32 or bfloat16; labels int (N,) or None (the null class); guidance the trained g
    and num_steps a positive int or None (config.num_steps), both static under `jax.jit`.
    Invalid options raise InputError while tracing, with the torch sampler's messages.
    """
    if family != FAMILY:
        raise ValueError(f"family must be {FAMILY!r}, got {family!r}")
    name = name or family
    net = dit.make_dit(config, two_times=True, time_scale=1.0)

    def generate(params: Mapping[str, Any], noise: jax.Array, labels: jax.Array | None, *, guidance: float,
                 num_steps: int | None = None) -> jax.Array:
        check_trained_guidance(name, check_guidance(name, guidance), config.guidance)
        k = check_num_steps(name, config.num_steps if num_steps is None else num_steps)
        n = noise.shape[0]
        # The torch grid: float64 times 1 = t_0 > ... > t_k = 0, network times and intervals
        # rounded to float32 as torch's time tensors and scalar products round them.
        times = np.linspace(1.0, 0.0, k + 1)
        t_now = times[:-1].astype(np.float32)  # (k,)
        interval = (times[:-1] - times[1:]).astype(np.float32)  # (k,) h = t - r

        def step(z: jax.Array, th: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
            t, h = th
            u = net.apply({"params": params}, z, jnp.full((n,), t), labels, jnp.full((n,), h))  # (N, C, H, W)
            return z - scale_by(u, h), None

        z, _ = jax.lax.scan(step, noise, (t_now, interval))
        return z  # (N, C, H, W)

    return generate


load = port_loader(__name__)  # what load_sampler(..., backend="jax") calls
