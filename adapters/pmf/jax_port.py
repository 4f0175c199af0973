"""pMF in Flax: iMF's port (`adapters.imf.jax_port`) with pMF's patch embedding, positions and output.

`convert_params` reads the torch `PMFDiT`'s state_dict (token tables (1, n, D), the position
table, the bottleneck convolutions) into the shared Flax `Net`; `make_generate` is iMF's
sampler on that network, with 2-D rotary tables on the patch tokens and the noise
multiplied by the size's `noise_scale` before the first step, as the torch sampler does.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from adapters import load_sampler
    >>> s = load_sampler("pmf-b16", hidden_size=64, depth=2, num_heads=4, head_depth=1, input_size=16,
    ...                  patch_size=4, num_classes=10)
    >>> params = convert_params(s.net.state_dict(), s.config, "pmf-b16")
    >>> generate = jax.jit(make_generate(s.config, "pmf"), static_argnames=("guidance",) + FAMILY_OPTIONS)
    >>> generate(params, jnp.zeros((2, 3, 16, 16)), jnp.array([1, 2]), guidance=2.0).shape
    (2, 3, 16, 16)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

from adapters.imf.jax_port import FAMILY_OPTIONS, Net, make_sampler, net_params
from adapters.jax.convert import StateDictReader
from adapters.jax.sampler import port_loader
from adapters.pmf.model import FAMILY, PMFConfig, grid_rope, pmf_mlp_hidden

__all__ = ["FAMILY_OPTIONS", "convert_params", "make_generate"]


def convert_params(state_dict: Mapping[str, Any], config: PMFConfig, what: str) -> dict:
    """The torch `PMFDiT` state_dict -> params of `adapters.imf.jax_port.Net`.

    Raises InputError naming every missing, unexpected and mis-shaped tensor.
    """
    r = StateDictReader(state_dict, what)
    params = net_params(r, config, hidden=pmf_mlp_hidden(config), bottleneck=config.bottleneck_channels,
                        token_lead=(1,), learned_positions=True)
    r.finish()
    return params


def make_generate(config: PMFConfig, family: str = FAMILY, *, name: str | None = None) -> Callable[..., jax.Array]:
    """pMF's sampler as ``generate(params, noise, labels, *, guidance, guidance_interval=None, num_steps=None)``;
    arguments as `adapters.imf.jax_port.make_generate`, noise (N, 3, H, W) standard normal."""
    if family != FAMILY:
        raise ValueError(f"family must be {FAMILY!r}, got {family!r}")
    net = Net(input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
              hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads,
              mlp_hidden=pmf_mlp_hidden(config), num_classes=config.num_classes, head_depth=config.head_depth,
              bottleneck=config.bottleneck_channels, learned_positions=True, x_prediction=True)
    rope = grid_rope(config.hidden_size // config.num_heads, config.input_size // config.patch_size)
    return make_sampler(net, rope, config, name or family, noise_scale=config.noise_scale)


load = port_loader(__name__)  # what load_sampler(..., backend="jax") calls
