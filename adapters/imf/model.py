"""improved MeanFlow (iMF, arXiv 2512.02012): the in-context-conditioned DiT and its k-step sampler.

The network follows the official PyTorch code (github:Lyy-iiis/imeanflow, branch ``torch``,
``models/imfDiT.py``) and names its parameters so that the released ``iMF-*-2.pth`` (a
state_dict of the reference's ``imf.iMeanFlow``, keys ``net.*``) loads unchanged: the file's
keys map to this module's by dropping the ``net.`` prefix and the reference's wrapper
names ``_flax_linear`` / ``_flax_embedding`` (`reference_key`).

What the network is:

- Conditioning is in context: 20 learned tokens (8 class, 4 guidance scale, 2 + 2 guidance
  interval, 4 time) each offset by an embedding of its scalar, prepended to the patch tokens:
  ``[class | omega | t_min | t_max | time | patches]``. The time tokens embed h = t - r
  only; the network never sees t itself, as in the reference (arXiv 2502.13129).
  The guidance scale enters as ``1 - 1/omega``.
- Blocks: RMSNorm pre-norm, attention with qk RMSNorm and 1-D rotary positions over the
  whole sequence (adjacent channel pairs rotate), SwiGLU MLP, and zero-initialised vector
  gates ``attn_scale`` / ``mlp_scale`` on both residual branches.
- ``depth - head_depth`` shared blocks, then ``head_depth`` blocks of the u head and its
  final layer. The reference's auxiliary v head (instantaneous velocity, a training aid)
  has no blocks in evaluation mode and only its final layer, ``v_final_layer``, remains in
  the checkpoint; this module holds it so the file loads strictly and the parameter count
  is the reference's, but sampling never runs it (its output is discarded by the reference).

The sampler is the reference's: t runs from 1 (noise) to 0 in k equal steps and each
step is z <- z - (t - r) u(z, h = t - r, omega, t_min, t_max, y). Guidance is an input of
the network, so a step costs one evaluation whatever the scale. nfebench's guidance g is
the reference's omega - 1 (0 means none, omega = 1).

`IMFDiT` is shared with pMF (`adapters.pmf.model`), which subclasses it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from adapters.api.checkpoint import CheckpointRef
from adapters.api.config import option
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, check_guidance
from adapters.base import TorchSampler, check_num_steps, check_patch_grid
from adapters.builder import Layout, build_sampler, sample_fields
from adapters.layers import LabelEmbedder, PatchEmbed, RMSNorm, TimestepEmbedder
from adapters.vae import SD_VAE_MSE_REPO, LatentNorm, VAESpec

FAMILY = "imf"
# The reference's latent normalisation (utils/vae_util.py): its model latents are
# (z - mean) / std per channel of sd-vae-ft-mse's latents z, so z = x * std + mean.
LATENT_MEAN = (0.86488, -0.27787343, 0.21616915, 0.3738409)
LATENT_STD = (4.85503674, 5.31922414, 3.93725398, 3.9870003)
IMF_VAE = VAESpec(SD_VAE_MSE_REPO, LatentNorm(scale=tuple(1 / s for s in LATENT_STD), shift=LATENT_MEAN))
# In-context conditioning tokens, in sequence order: (parameter name, count).
CONDITION_TOKENS = (("class_tokens", 8), ("omega_tokens", 4), ("t_min_tokens", 2), ("t_max_tokens", 2),
                    ("time_tokens", 4))
ROPE_THETA = 10000.0


def reference_key(key: str) -> str:
    """A key of the reference's state_dict -> this module's: ``net.shared_blocks.0.attn.q_proj._flax_linear.weight``
    -> ``shared_blocks.0.attn.q_proj.weight``. Keys already in this module's form are unchanged."""
    key = key.removeprefix("net.")
    return key.replace("._flax_linear.", ".").replace("._flax_embedding.", ".")


# ---------------------------------------------------------------------------
# Rotary positions on adjacent channel pairs
# ---------------------------------------------------------------------------


def sequence_rope(head_dim: int, length: int, theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (length, head_dim/2) of 1-D rotary positions 0..length-1: pair j (channels
    2j, 2j+1) turns by position * theta^(-2j / head_dim), as the reference's `precompute_rope_freqs`."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))  # (d/2,)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), freqs)  # (S, d/2)
    return angles.cos(), angles.sin()


def apply_pair_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2j, 2j+1) of the last R = cos.shape[0] tokens of x (N, S, H, d) by the
    tables (R, d/2); earlier tokens pass unchanged. Computed in float32 (the reference rotates
    complex64 numbers), returned in x's dtype."""
    rot = x.shape[1] - cos.shape[0]
    pairs = x[:, rot:].float().unflatten(-1, (-1, 2))  # (N, R, H, d/2, 2)
    a, b = pairs.unbind(-1)
    c, s = cos[:, None].float(), sin[:, None].float()  # (R, 1, d/2)
    turned = torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2).to(x.dtype)  # (N, R, H, d)
    return torch.cat([x[:, :rot], turned], dim=1)


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


class Attention(nn.Module):
    """Self-attention with separate bias-free q/k/v/out projections, RMSNorm on each head's
    queries and keys, and rotary positions (`apply_pair_rope`) on both."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        n, s, d = x.shape
        heads = (n, s, self.num_heads, self.head_dim)
        q = apply_pair_rope(self.q_norm(self.q_proj(x).view(heads)), *rope)  # (N, S, H, d)
        k = apply_pair_rope(self.k_norm(self.k_proj(x).view(heads)), *rope)
        v = self.v_proj(x).view(heads)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (N, H, S, d)
        return self.out_proj(out.transpose(1, 2).reshape(n, s, d))  # (N, S, D)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), bias-free."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm block whose residual branches are scaled by learned per-channel gates (zero at init)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_hidden)
        self.attn_scale = nn.Parameter(torch.zeros(dim))
        self.mlp_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope) * self.attn_scale
        return x + self.mlp(self.norm2(x)) * self.mlp_scale  # (N, S, D)

    def flops(self, tokens: int) -> int:
        """Matmul FLOPs per sample (multiply-add = 2), as `FlopCounterMode` counts them."""
        d, hidden = self.attn_scale.shape[0], self.mlp.w1.out_features
        return 2 * tokens * d * d * 4 + 4 * tokens * tokens * d + 2 * tokens * d * hidden * 3


class FinalLayer(nn.Module):
    """RMSNorm and a linear map to p*p*C values per patch token (zero at init)."""

    def __init__(self, dim: int, out_features: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.linear = nn.Linear(dim, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


def _init_linear(layer: nn.Linear, constant: float) -> None:
    """The reference's "scaled_variance" init: N(0, (constant / sqrt(fan_in))^2), zero bias."""
    nn.init.normal_(layer.weight, std=constant / math.sqrt(layer.in_features))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _init_conv_as_linear(conv: nn.Conv2d) -> None:
    """Xavier-uniform on the conv as a linear map of the flattened patch, zero bias."""
    fan_in, fan_out = conv.weight[0].numel(), conv.weight.shape[0]
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(conv.weight, -limit, limit)
    nn.init.zeros_(conv.bias)


class IMFDiT(nn.Module):
    """iMF's DiT with in-context conditioning (the reference's ``imfDiT`` in evaluation mode).

    Args:
        input_size: latent side (32). patch_size: 2. in_channels: 4.
        hidden_size, depth, num_heads, mlp_hidden: transformer size (iMF-B/2: 768, 12, 12, 2048).
        num_classes: class count; the label table has one more row, the null class.
        head_depth: blocks of the u head after the shared ones (8 in every released size).
        x_embedder: the patch embedding, (N, C, H, W) -> (N, T, D) with a `flops(tokens)`
            method; None: one stride-p convolution (`PatchEmbed`).

    `forward(x, t, h, omega, t_min, t_max, y)` -> u (N, C, H, W), the average velocity over
    [t - h, t]. t is taken for pMF's signature and unused here. Subclasses change the token
    tables, the positions and the output map (`adapters.pmf.model`).

    Example::

        >>> net = IMFDiT(input_size=8, hidden_size=32, depth=2, num_heads=2, mlp_hidden=64, num_classes=10,
        ...              head_depth=1)
        >>> ones = torch.ones(3)
        >>> net(torch.randn(3, 4, 8, 8), ones, ones, 2 * ones, 0 * ones, ones, torch.tensor([0, 1, 2])).shape
        torch.Size([3, 4, 8, 8])
    """

    has_v_final_layer = True  # the reference keeps it in evaluation mode (pMF does not)

    def __init__(self, *, input_size: int = 32, patch_size: int = 2, in_channels: int = 4, hidden_size: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_hidden: int = 2048, num_classes: int = 1000,
                 head_depth: int = 8, x_embedder: nn.Module | None = None):
        super().__init__()
        if not 0 <= head_depth <= depth:
            raise ValueError(f"head_depth {head_depth} must lie in [0, depth={depth}]")
        self.in_channels, self.patch_size = in_channels, patch_size
        self.hidden_size, self.head_dim = hidden_size, hidden_size // num_heads
        self.grid = input_size // patch_size
        self.num_patches = self.grid ** 2
        self.prefix_tokens = sum(n for _, n in CONDITION_TOKENS)
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size) if x_embedder is None else x_embedder
        self.h_embedder = TimestepEmbedder(hidden_size)
        self.omega_embedder = TimestepEmbedder(hidden_size)
        self.cfg_t_start_embedder = TimestepEmbedder(hidden_size)
        self.cfg_t_end_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        for name, count in CONDITION_TOKENS:
            setattr(self, name, nn.Parameter(torch.empty(self._token_shape(count))))
        self.shared_blocks = nn.ModuleList(Block(hidden_size, num_heads, mlp_hidden) for _ in range(depth - head_depth))
        self.u_heads = nn.ModuleList(Block(hidden_size, num_heads, mlp_hidden) for _ in range(head_depth))
        out = patch_size * patch_size * in_channels
        self.u_final_layer = FinalLayer(hidden_size, out)
        self.v_final_layer = FinalLayer(hidden_size, out) if self.has_v_final_layer else None
        # Derived float32 tables (R, d/2), not weights: a plain attribute, not a buffer, so they are
        # neither saved nor loaded, and `.to(bfloat16)` does not round the rotation angles.
        self.rope = self._rope_tables()
        self.initialize_weights()

    # --- what pMF overrides -------------------------------------------------------------

    def _token_shape(self, count: int) -> tuple[int, ...]:
        return (count, self.hidden_size)

    def _rope_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """1-D positions over the whole sequence, prefix tokens included."""
        return sequence_rope(self.head_dim, self.prefix_tokens + self.num_patches)

    def _add_positions(self, seq: torch.Tensor) -> torch.Tensor:
        return seq  # iMF's positions are rotary only

    def _output(self, x: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out  # iMF predicts u directly

    # --- shared ---------------------------------------------------------------------------

    def initialize_weights(self) -> None:
        """The reference's init: block linears N(0, (0.32/sqrt(fan_in))^2), embedders and tokens
        with constant 1, the patch convolution xavier-uniform, gates and final layers zero."""
        for module in (self.shared_blocks, self.u_heads):
            for m in module.modules():
                if isinstance(m, nn.Linear):
                    _init_linear(m, 0.32)
        for emb in (self.h_embedder, self.omega_embedder, self.cfg_t_start_embedder, self.cfg_t_end_embedder):
            _init_linear(emb.mlp[0], 1.0)
            _init_linear(emb.mlp[2], 1.0)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=self.hidden_size ** -0.5)
        for name, _ in CONDITION_TOKENS:
            nn.init.normal_(getattr(self, name), std=self.hidden_size ** -0.5)
        for m in self.x_embedder.modules():
            if isinstance(m, nn.Conv2d):
                _init_conv_as_linear(m)
        for final in (self.u_final_layer, self.v_final_layer):
            if final is not None:
                nn.init.zeros_(final.linear.weight)
                nn.init.zeros_(final.linear.bias)

    def sequence(self, x: torch.Tensor, h: torch.Tensor, omega: torch.Tensor, t_min: torch.Tensor,
                 t_max: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The token sequence [class | omega | t_min | t_max | time | patches] (N, S, D)."""
        n = x.shape[0]
        embedded = {
            "class_tokens": self.y_embedder(y, n),
            "omega_tokens": self.omega_embedder(1 - 1 / omega.float()),  # the scale as the reference embeds it
            "t_min_tokens": self.cfg_t_start_embedder(t_min),
            "t_max_tokens": self.cfg_t_end_embedder(t_max),
            "time_tokens": self.h_embedder(h),
        }  # name -> (N, D)
        prefix = [getattr(self, name) + embedded[name][:, None] for name, _ in CONDITION_TOKENS]  # (N, n_i, D)
        return self._add_positions(torch.cat([*prefix, self.x_embedder(x)], dim=1))  # (N, S, D)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p*p*C) with features (p, q, c) per row-major token -> (N, C, H, W)."""
        n, p, c, g = x.shape[0], self.patch_size, self.in_channels, self.grid
        x = x.reshape(n, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, omega: torch.Tensor, t_min: torch.Tensor,
                t_max: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """x (N, C, H, W); t, h = t - r, omega, t_min, t_max (N,); y (N,) labels or None (null
        class) -> u (N, C, H, W)."""
        seq = self.sequence(x, h, omega, t_min, t_max, y)  # (N, S, D)
        rope = tuple(table.to(x.device) for table in self.rope)  # a no-op on the device they were built on
        for block in (*self.shared_blocks, *self.u_heads):
            seq = block(seq, rope)
        out = self.unpatchify(self.u_final_layer(seq[:, self.prefix_tokens:]))  # (N, C, H, W)
        return self._output(x, t, out)

    def flops(self) -> int:
        """Matmul FLOPs of one forward per sample, multiply-add = 2 (what `FlopCounterMode` counts).
        The unused v_final_layer is not run, so not counted."""
        tokens, d = self.prefix_tokens + self.num_patches, self.hidden_size
        total = self.x_embedder.flops(self.num_patches)
        total += sum(e.flops() for e in (self.h_embedder, self.omega_embedder, self.cfg_t_start_embedder,
                                         self.cfg_t_end_embedder))
        total += sum(b.flops(tokens) for b in (*self.shared_blocks, *self.u_heads))
        return total + 2 * self.num_patches * d * self.u_final_layer.linear.out_features


# ---------------------------------------------------------------------------
# Config, sampler, builder
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanFlowDiTConfig:
    """The fields iMF and pMF share; every field can be overridden in `load_sampler`.

    Guidance defaults: `guidance`, `interval_min` and `interval_max` left None take the row of
    `reference_settings` for `num_steps` (or its first row), resolved when the sampler is built
    (`resolve_defaults`)."""

    hidden_size: int = option(768, "transformer width")
    depth: int = option(12, "transformer blocks, u head included")
    num_heads: int = option(12, "attention heads")
    head_depth: int = option(8, "blocks of the u head (the reference's aux_head_depth)")
    mlp_ratio: float = option(8 / 3, "SwiGLU hidden width / width")
    patch_size: int = option(2, "patch side")
    input_size: int = option(32, "sample side")
    in_channels: int = option(4, "sample channels")
    num_classes: int = option(1000, "class count (the null class is extra)")
    num_steps: int = option(1, "default sampling steps (NFE)")
    guidance: float | None = option(
        None, "default guidance g = omega - 1 (0 = none); None: from reference_settings for num_steps")
    interval_min: float | None = option(None, "default guidance interval start t_min; None: from reference_settings")
    interval_max: float | None = option(None, "default guidance interval end t_max; None: from reference_settings")
    reference_settings: tuple[tuple[int, float, float, float], ...] = option(
        ((1, 8.0, 0.4, 0.65),), "(num_steps, omega, t_min, t_max) of the reference README's evaluation commands")


@dataclass(frozen=True)
class IMFConfig(MeanFlowDiTConfig):
    """An iMF id's defaults (iMF-B/2 unless overridden)."""

    vae: str | None = option(None, "SD-VAE (ft-mse) folder or hub id (see adapters.vae)")


def mlp_hidden(config: MeanFlowDiTConfig) -> int:
    """SwiGLU width as the reference computes it: int(width * ratio) (8/3 of 768 is 2048)."""
    return int(config.hidden_size * config.mlp_ratio)


def resolve_defaults(config: MeanFlowDiTConfig) -> MeanFlowDiTConfig:
    """`config` with guidance and interval filled in from `reference_settings` for its num_steps."""
    rows = {row[0]: row[1:] for row in config.reference_settings}
    omega, t_min, t_max = rows.get(config.num_steps, config.reference_settings[0][1:])
    return dataclasses.replace(
        config, guidance=omega - 1.0 if config.guidance is None else config.guidance,
        interval_min=t_min if config.interval_min is None else config.interval_min,
        interval_max=t_max if config.interval_max is None else config.interval_max)


def check_mean_flow_guidance(name: str, guidance: object) -> float:
    """g as a float, refused below 0: the network embeds 1 - 1/omega with omega = 1 + g, trained on omega >= 1."""
    g = check_guidance(name, guidance)
    if g < 0:
        raise InputError(f"{name}: guidance must be >= 0 (omega = 1 + g >= 1, the range the model was trained on), "
                         f"got {g}")
    return g


def check_interval(name: str, interval: object) -> tuple[float, float]:
    """A guidance interval (t_min, t_max) with 0 <= t_min <= t_max <= 1, else an InputError."""
    ok = isinstance(interval, (tuple, list)) and len(interval) == 2 and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in interval)
    if not ok:
        raise InputError(f"{name}: guidance_interval must be a pair (t_min, t_max) of numbers, got {interval!r}")
    t_min, t_max = float(interval[0]), float(interval[1])
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise InputError(f"{name}: guidance_interval ({t_min}, {t_max}) must satisfy 0 <= t_min <= t_max <= 1")
    return t_min, t_max


class MeanFlowDiTSampler(TorchSampler):
    """k steps of z <- z - (t - r) u(z, t, h = t - r, omega, t_min, t_max, y) from t = 1 to 0.

    `generate(noise, labels, guidance=g, guidance_interval=(t_min, t_max), num_steps=k)`:
    omega = 1 + g is an input of the network (one evaluation per step, NFE = k); omitted
    options take the config's (resolved for the configured num_steps: a call's num_steps
    changes the step count only). Noise is standard normal; it is multiplied by the family's
    `noise_scale` (pMF's; 1 for iMF) before the first step. Labels None: the null class.
    """

    def __init__(self, info: ModelInfo, net: IMFDiT, config: MeanFlowDiTConfig, *, device: torch.device,
                 dtype: torch.dtype, noise_scale: float = 1.0, vae: str | None = None, vae_spec: VAESpec = IMF_VAE):
        super().__init__(info, net, device=device, dtype=dtype, vae=vae, vae_spec=vae_spec)
        self.config = config
        self.noise_scale = noise_scale

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None, *,
                  guidance_interval: tuple[float, float] | None = None,
                  num_steps: int | None = None) -> torch.Tensor:
        name, c = self.info.name, self.config
        g = check_mean_flow_guidance(name, c.guidance if guidance is None else guidance)
        t_min, t_max = check_interval(name, (c.interval_min, c.interval_max) if guidance_interval is None
                                      else guidance_interval)
        k = check_num_steps(name, c.num_steps if num_steps is None else num_steps)
        n, dev = noise.shape[0], noise.device

        def scalar(value: float) -> torch.Tensor:
            return torch.full((n,), value, dtype=torch.float32, device=dev)  # (N,)

        omega, lo, hi = scalar(1.0 + g), scalar(t_min), scalar(t_max)
        # The reference's float32 grid and its (t - r) tensors.
        times = torch.linspace(1.0, 0.0, k + 1, dtype=torch.float32, device=dev)
        z = noise * self.noise_scale  # (N, C, H, W)
        for i in range(k):
            t, r = times[i].expand(n), times[i + 1].expand(n)  # (N,)
            h = t - r
            u = self.net(z, t, h, omega, lo, hi, labels)  # (N, C, H, W)
            z = z - h.to(z.dtype)[:, None, None, None] * u
        return z


def validate(name: str, config: MeanFlowDiTConfig, *, head_dim_multiple: int = 2) -> MeanFlowDiTConfig:
    """Check the sizes and defaults of `config`; returns it with its defaults resolved."""
    check_patch_grid(name, config.input_size, config.patch_size)
    if config.hidden_size % config.num_heads or (config.hidden_size // config.num_heads) % head_dim_multiple:
        raise InputError(f"{name}: hidden_size {config.hidden_size} / num_heads {config.num_heads} must be a "
                         f"whole head width divisible by {head_dim_multiple} (rotary positions turn channel pairs)")
    if not 0 <= config.head_depth <= config.depth:
        raise InputError(f"{name}: head_depth {config.head_depth} must lie in [0, depth={config.depth}]")
    check_num_steps(name, config.num_steps)
    config = resolve_defaults(config)
    check_mean_flow_guidance(name, config.guidance)
    check_interval(name, (config.interval_min, config.interval_max))
    return config


def build_mean_flow_dit(name: str, config: MeanFlowDiTConfig, make_net: Callable[[], IMFDiT], *, family: str,
                        space: str, checkpoint: CheckpointRef | str | None, device: str | torch.device,
                        dtype: torch.dtype, layout: Layout = Layout(rename=reference_key),
                        **sampler_options: Any) -> MeanFlowDiTSampler:
    """The builder iMF and pMF share (`adapters.builder.build_sampler`): the network from
    `make_net`, a checkpoint read through `layout` (the reference's keys mapped by
    `reference_key`), one evaluation per step, and the sampler with `sampler_options`
    (``noise_scale``, ``vae``, ``vae_spec``; see `MeanFlowDiTSampler`)."""

    def describe(net: IMFDiT) -> dict:
        return dict(nfe=config.num_steps, sequential_steps=config.num_steps, num_classes=config.num_classes,
                    **sample_fields(space, config.in_channels, config.input_size))

    return build_sampler(name, family, make_net=make_net, describe=describe, checkpoint=checkpoint, device=device,
                         dtype=dtype, layout=layout,
                         sampler=lambda info, net: MeanFlowDiTSampler(info, net, config, device=torch.device(device),
                                                                      dtype=dtype, **sampler_options))


def build(name: str, config: IMFConfig, *, checkpoint: CheckpointRef | str | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> MeanFlowDiTSampler:
    """Registry builder of the iMF ids (see `adapters.load_sampler`): a latent model decoded by
    sd-vae-ft-mse with the reference's per-channel normalisation (`IMF_VAE`).

    Example::

        >>> s = build("imf-b2", IMFConfig(hidden_size=64, depth=2, num_heads=4, head_depth=1, input_size=8))
        >>> s.info.nfe, s.info.sample_shape, s.config.guidance  # omega 8 from reference_settings
        (1, (4, 8, 8), 7.0)
    """
    config = validate(name, config)

    def make_net() -> IMFDiT:
        return IMFDiT(input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
                      hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads,
                      mlp_hidden=mlp_hidden(config), num_classes=config.num_classes, head_depth=config.head_depth)

    return build_mean_flow_dit(name, config, make_net, family=FAMILY, space="latent", checkpoint=checkpoint,
                               device=device, dtype=dtype, vae=config.vae, vae_spec=IMF_VAE)
