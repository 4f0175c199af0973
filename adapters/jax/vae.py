"""SD-VAE decode in Flax: diffusers' `AutoencoderKL` decoder (post_quant_conv + Decoder),
ported because diffusers no longer ships a Flax VAE.

Same configuration and scaling as the torch adapter (`adapters.vae`); the weights come
from the diffusers state_dict, so one checkpoint (or one seeded random init) serves both
back-ends. Internally NHWC (Flax convolutions); NCHW at the edges like the torch side.

Example::

    from adapters.vae import SDVAEDecoder
    params = convert_decoder_params(SDVAEDecoder("random").vae.state_dict())
    decode = jax.jit(make_decode())
    images = decode(params, latents)  # (N, 4, 32, 32) -> (N, 3, 256, 256) in [-1, 1]
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from adapters.api.errors import InputError
from adapters.jax.convert import StateDictReader
from adapters.vae import SD_VAE_CONFIG, LatentNorm

# decoder + post_quant_conv of sd-vae-ft-ema, as `SDVAEDecoder.params` counts them.
DECODER_PARAMS = 49_490_199
EPS = 1e-6  # every GroupNorm of the diffusers VAE decoder


def _check_config(config: Mapping[str, Any]) -> None:
    """Refuse AutoencoderKL options that change the decoder's structure: the port has only
    the sd-vae layout (UpDecoderBlock2D, SiLU, mid attention, post_quant_conv)."""
    problems = []
    if any(t != "UpDecoderBlock2D" for t in config["up_block_types"]):
        problems.append(f"up_block_types {tuple(config['up_block_types'])} (only UpDecoderBlock2D)")
    if len(config["up_block_types"]) != len(config["block_out_channels"]):
        problems.append("up_block_types and block_out_channels differ in length")
    if config.get("act_fn", "silu") != "silu":
        problems.append(f"act_fn {config['act_fn']!r} (only 'silu')")
    if not config.get("mid_block_add_attention", True):
        problems.append("mid_block_add_attention=False")
    if not config.get("use_post_quant_conv", True):
        problems.append("use_post_quant_conv=False")
    if problems:
        raise InputError("the JAX SD-VAE decoder does not support " + "; ".join(problems)
                         + ": use the torch decoder (adapters.vae) for this VAE")


class GroupNorm(nn.Module):
    """torch GroupNorm on NHWC, statistics in float32 whatever the activation dtype."""

    groups: int

    @nn.compact
    def __call__(self, x):  # (N, H, W, C)
        n, h, w, c = x.shape
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        g = x.astype(jnp.float32).reshape(n, h, w, self.groups, c // self.groups)
        mean = g.mean(axis=(1, 2, 4), keepdims=True)
        var = jnp.square(g - mean).mean(axis=(1, 2, 4), keepdims=True)  # biased, as torch
        y = ((g - mean) * jax.lax.rsqrt(var + EPS)).reshape(n, h, w, c)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def _conv(features: int, kernel: int, name: str) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), padding=kernel // 2, name=name)


class ResnetBlock(nn.Module):
    """diffusers ResnetBlock2D without time embedding (temb_channels=None, output scale 1)."""

    out_channels: int
    groups: int

    @nn.compact
    def __call__(self, x):  # (N, H, W, C_in)
        h = nn.silu(GroupNorm(self.groups, name="norm1")(x))
        h = _conv(self.out_channels, 3, "conv1")(h)
        h = nn.silu(GroupNorm(self.groups, name="norm2")(h))
        h = _conv(self.out_channels, 3, "conv2")(h)  # (N, H, W, C_out)
        if x.shape[-1] != self.out_channels:
            x = _conv(self.out_channels, 1, "conv_shortcut")(x)
        return x + h


class Attention(nn.Module):
    """The VAE mid-block attention: one head over all H*W positions, head dim = channels,
    GroupNorm first, residual after; logits and softmax in float32 (diffusers upcasts)."""

    groups: int

    @nn.compact
    def __call__(self, x):  # (N, H, W, C)
        n, h, w, c = x.shape
        t = GroupNorm(self.groups, name="group_norm")(x).reshape(n, h * w, c)  # (N, T, C)
        q, k, v = (nn.Dense(c, name=name)(t) for name in ("to_q", "to_k", "to_v"))
        logits = jnp.einsum("nqc,nkc->nqk", q, k, preferred_element_type=jnp.float32) * c ** -0.5
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # (N, T, T)
        out = nn.Dense(c, name="to_out_0")(jnp.einsum("nqk,nkc->nqc", weights, v))
        return x + out.reshape(n, h, w, c)


class Decoder(nn.Module):
    """post_quant_conv + diffusers Decoder: latents (N, h, w, 4) -> images (N, 8h, 8w, 3) NHWC."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    groups: int
    latent_channels: int
    out_channels: int

    @nn.compact
    def __call__(self, z):  # (N, h, w, latent)
        x = _conv(self.latent_channels, 1, "post_quant_conv")(z)
        x = _conv(self.block_out_channels[-1], 3, "conv_in")(x)
        x = ResnetBlock(self.block_out_channels[-1], self.groups, name="mid_resnets_0")(x)
        x = Attention(self.groups, name="mid_attentions_0")(x)
        x = ResnetBlock(self.block_out_channels[-1], self.groups, name="mid_resnets_1")(x)
        channels = tuple(reversed(self.block_out_channels))
        for i, ch in enumerate(channels):
            for j in range(self.layers_per_block + 1):
                x = ResnetBlock(ch, self.groups, name=f"up_{i}_resnets_{j}")(x)
            if i < len(channels) - 1:  # every up block but the last doubles the resolution
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest, as F.interpolate
                x = _conv(ch, 3, f"up_{i}_upsamplers_0")(x)
        x = nn.silu(GroupNorm(self.groups, name="conv_norm_out")(x))
        return _conv(self.out_channels, 3, "conv_out")(x)  # (N, 8h, 8w, 3) for 4 blocks


def _decoder(config: Mapping[str, Any]) -> Decoder:
    _check_config(config)
    return Decoder(block_out_channels=tuple(config["block_out_channels"]),
                   layers_per_block=config["layers_per_block"], groups=config["norm_num_groups"],
                   latent_channels=config["latent_channels"], out_channels=config["out_channels"])


def convert_decoder_params(state_dict: Mapping[str, Any], what: str = "sd-vae",
                           config: Mapping[str, Any] = SD_VAE_CONFIG) -> dict:
    """diffusers `AutoencoderKL` state_dict -> Flax params of `make_decode`'s decoder.

    Args:
        state_dict: ``AutoencoderKL.state_dict()`` (torch tensors or arrays). Keys under
            ``encoder.`` and ``quant_conv.`` may be present (a full VAE) or absent
            (`adapters.vae.SDVAEDecoder` drops the encoder); they are not used.
        what: names the model in errors.
        config: the AutoencoderKL config the state_dict was built with.

    Returns:
        Nested dict of float32 numpy arrays, to pass as `params` to `make_decode`'s function.

    Raises:
        InputError: naming every missing, unexpected or mis-shaped tensor at once.

    Example::

        params = convert_decoder_params(SDVAEDecoder("random").vae.state_dict())
    """
    dec = _decoder(config)
    r = StateDictReader(state_dict, what, ignore=("encoder.", "quant_conv."))

    def resnet(prefix: str, c_in: int, c_out: int) -> dict:
        p = {"norm1": r.norm(f"{prefix}.norm1", c_in), "conv1": r.conv(f"{prefix}.conv1", c_in, c_out, 3),
             "norm2": r.norm(f"{prefix}.norm2", c_out), "conv2": r.conv(f"{prefix}.conv2", c_out, c_out, 3)}
        if c_in != c_out:
            p["conv_shortcut"] = r.conv(f"{prefix}.conv_shortcut", c_in, c_out, 1)
        return p

    top = dec.block_out_channels[-1]
    attn = "decoder.mid_block.attentions.0"
    params = {
        "post_quant_conv": r.conv("post_quant_conv", dec.latent_channels, dec.latent_channels, 1),
        "conv_in": r.conv("decoder.conv_in", dec.latent_channels, top, 3),
        "mid_resnets_0": resnet("decoder.mid_block.resnets.0", top, top),
        "mid_attentions_0": {"group_norm": r.norm(f"{attn}.group_norm", top),
                             **{n: r.linear(f"{attn}.{n}", top, top) for n in ("to_q", "to_k", "to_v")},
                             "to_out_0": r.linear(f"{attn}.to_out.0", top, top)},
        "mid_resnets_1": resnet("decoder.mid_block.resnets.1", top, top),
    }
    c_prev = top
    channels = tuple(reversed(dec.block_out_channels))
    for i, ch in enumerate(channels):
        for j in range(dec.layers_per_block + 1):
            params[f"up_{i}_resnets_{j}"] = resnet(f"decoder.up_blocks.{i}.resnets.{j}", c_prev if j == 0 else ch, ch)
        if i < len(channels) - 1:
            params[f"up_{i}_upsamplers_0"] = r.conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", ch, ch, 3)
        c_prev = ch
    params["conv_norm_out"] = r.norm("decoder.conv_norm_out", dec.block_out_channels[0])
    params["conv_out"] = r.conv("decoder.conv_out", dec.block_out_channels[0], dec.out_channels, 3)
    r.finish()
    return params


def make_decode(config: Mapping[str, Any] = SD_VAE_CONFIG,
                norm: LatentNorm = LatentNorm()) -> Callable[[Any, jax.Array], jax.Array]:
    """The decode function: ``decode(params, latents) -> images``, pure and jit-traceable.

    Args:
        config: the AutoencoderKL config (`adapters.vae.SD_VAE_CONFIG` by default).
        norm: the family's latent normalisation (`adapters.vae.LatentNorm`; by default the
            latents arrive multiplied by 0.18215, as most samplers produce them).

    Returns:
        ``decode(params, latents)``: `params` from `convert_decoder_params` (float32, or cast
        to bfloat16 as a whole), latents (N, C_latent, h, w) NCHW; returns images
        (N, 3, 8h, 8w) NCHW in [-1, 1] (8x for sd-vae's four blocks), in the dtype of the params (the latents are cast to
        it, as the torch adapter does). GroupNorm statistics and attention softmax are float32.

    Example::

        decode = jax.jit(make_decode())
        images = decode(params, jnp.zeros((1, 4, 32, 32)))  # (1, 3, 256, 256)
    """
    dec = _decoder(config)

    def decode(params, latents):
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        scale = jnp.asarray(norm.scale, dtype)[None, :, None, None]
        shift = jnp.asarray(norm.shift, dtype)[None, :, None, None]
        z = jnp.transpose(latents.astype(dtype) / scale + shift, (0, 2, 3, 1))  # (N, h, w, C)
        x = dec.apply({"params": params}, z)  # (N, 8h, 8w, 3)
        return jnp.clip(jnp.transpose(x, (0, 3, 1, 2)), -1, 1)  # (N, 3, 8h, 8w)

    return decode
