"""BiFlow's reverse model G in Flax: a port of `adapters.biflow.model` (noise -> latent in one pass).

`convert_params` turns the torch `BiFlowNet`'s state_dict into this module's params, and
`make_generate` returns the sampler as one pure function for `jax.jit`: one pass of G with
the guidance scale embedded like a timestep, labels None sampling the null class. The stage
outputs, used only to train G, are not computed.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from adapters import load_sampler
    >>> s = load_sampler("biflow-b2", hidden_size=64, depth=4, num_heads=2, num_stages=2, input_size=8,
    ...                  num_classes=10)
    >>> params = convert_params(s.net.state_dict(), s.config, "biflow-b2")
    >>> generate = jax.jit(make_generate(s.config, "biflow"), static_argnames=("guidance",))
    >>> generate(params, jnp.zeros((2, 4, 8, 8)), jnp.array([1, 2]), guidance=1.0).shape
    (2, 4, 8, 8)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from flax import linen as nn

from adapters.api.sampler import check_guidance
from adapters.base import check_guided_labels
from adapters.biflow.model import FAMILY, BiFlowConfig
from adapters.jax.convert import StateDictReader
from adapters.jax.layers import (
    LabelEmbedder,
    RMSNorm,
    TimestepEmbedder,
    TransformerBlock,
    convert_block,
    convert_label_embedder,
    convert_timestep_embedder,
    patchify,
    rope_2d_tables,
    unpatchify,
)
from adapters.jax.sampler import port_loader

FAMILY_OPTIONS: tuple[str, ...] = ()


def _mlp_hidden(config: BiFlowConfig) -> int:
    return int(2 * config.mlp_ratio * config.hidden_size / 3)  # as torch BiFlowNet sizes its SwiGLU


class BiFlowNet(nn.Module):
    """`adapters.biflow.model.BiFlowNet` without stage outputs: noise (N, C, H, W), labels (N,) or None,
    guidance (N,) -> latent (N, C, H, W)."""

    config: BiFlowConfig

    @nn.compact
    def __call__(self, noise: jax.Array, labels: jax.Array | None, guidance: jax.Array) -> jax.Array:
        cfg = self.config
        n, d, p = noise.shape[0], cfg.hidden_size, cfg.patch_size
        cos, sin = rope_2d_tables(cfg.input_size // p, d // cfg.num_heads, cfg.rope_base)  # (T, head_dim) each
        rope = (jnp.asarray(cos), jnp.asarray(sin))
        x = nn.Dense(d, name="x_embedder")(patchify(noise, p))  # (N, T, D)
        c = (LabelEmbedder(cfg.num_classes, d, name="y_embedder")(labels, n)
             + TimestepEmbedder(d, scale=cfg.guidance_scale, name="g_embedder")(guidance, noise.dtype))  # (N, D)
        mlp_hidden = _mlp_hidden(cfg)
        for i in range(cfg.depth):
            x = TransformerBlock(d, cfg.num_heads, mlp_hidden, adaln=True, modern=True, name=f"blocks_{i}")(x, c, rope)
        x = TransformerBlock(d, cfg.num_heads, mlp_hidden, adaln=False, modern=True, name="denoise_block")(x, rope=rope)
        tokens = nn.Dense(cfg.in_channels * p * p, name="head")(RMSNorm(d, name="norm_out")(x))  # (N, T, C*p*p)
        return unpatchify(tokens, p, (cfg.input_size, cfg.input_size))  # (N, C, H, W)


def convert_params(state_dict: Mapping[str, Any], config: BiFlowConfig, what: str) -> dict:
    """The torch `BiFlowNet` state_dict -> params of `BiFlowNet` (the value of ``{"params": ...}``).

    Args:
        state_dict: tensors of the torch adapter's `net` (any dtype; converted to float32 numpy).
        config: the torch adapter's `BiFlowConfig`.
        what: the model's name, for errors.

    Raises:
        InputError naming every missing, unexpected and mis-shaped tensor.
    """
    r = StateDictReader(state_dict, what)
    d, heads, mlp_hidden = config.hidden_size, config.num_heads, _mlp_hidden(config)
    token_dim = config.in_channels * config.patch_size ** 2
    params = {
        "x_embedder": r.linear("x_embedder", token_dim, d),
        "y_embedder": convert_label_embedder(r, "y_embedder", config.num_classes, d),
        "g_embedder": convert_timestep_embedder(r, "g_embedder", d),
        "denoise_block": convert_block(r, "denoise_block", d, mlp_hidden, heads, adaln=False, modern=True),
        "norm_out": r.norm("norm_out", d, bias=False),
        "head": r.linear("head", d, token_dim),
    }
    for i in range(config.depth):
        params[f"blocks_{i}"] = convert_block(r, f"blocks.{i}", d, mlp_hidden, heads, adaln=True, modern=True)
    r.finish()
    return params


def make_generate(config: BiFlowConfig, family: str = FAMILY, *, name: str | None = None) -> Callable[..., jax.Array]:
    """The sampler as ``generate(params, noise, labels, *, guidance) -> x``: one pass of G.

    Args:
        config: the torch adapter's `BiFlowConfig`.
        family: must be ``"biflow"``.
        name: the model's name in error messages (default: the family).

    `generate` takes params from `convert_params` in the dtype of `noise` (N, C, H, W),
    float32 or bfloat16; labels int (N,) or None (the null class, where only guidance 0 is
    allowed); guidance a float, static under `jax.jit`.
    """
    if family != FAMILY:
        raise ValueError(f"family must be {FAMILY!r}, got {family!r}")
    name = name or family
    net = BiFlowNet(config)

    def generate(params: Mapping[str, Any], noise: jax.Array, labels: jax.Array | None, *,
                 guidance: float) -> jax.Array:
        g = check_guidance(name, guidance)
        check_guided_labels(name, g, labels)
        scale = jnp.full((noise.shape[0],), g, jnp.float32)  # (N,)
        return net.apply({"params": params}, noise, labels, scale)

    return generate


load = port_loader(__name__)  # what load_sampler(..., backend="jax") calls
