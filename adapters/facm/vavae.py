"""FACM's tokenizer decoder: the VA-VAE (``vavae-imagenet256-f16d32-dinov2.pt``), decode only.

The VA-VAE (LightningDiT's vision-foundation-aligned VAE) is the LDM ``AutoencoderKL`` of
github:ali-vilab/FACM ``ldit/autoencoder.py`` with z 32, ch 128, ch_mult (1, 1, 2, 2, 4), two
residual blocks per level (three on the way up), attention at 16x16 (the middle and the
lowest up level) and 16x upsampling: a 32x16x16 latent decodes to a 256x256 image. Decoding
is ``decoder(post_quant_conv(z))``; the decoder and post_quant_conv hold 41,418,659
parameters. `LDMDecoder` is written here with the reference's parameter names, so its
state_dict keys are the file's.

FACM's latents are normalised per channel (utils.py ``decode_image``): z = x * std + mean
with ``latents_stats.pt``'s ``mean`` and ``std``, (1, 32, 1, 1) each, then the image is
clamped to [-1, 1].

Weights: ``vae=`` names a folder laid out like FACM's ``cache/`` (`VAE_FILE`, `STATS_FILE`).
Of the VAE file's ``state_dict`` only ``decoder.*`` and ``post_quant_conv.*`` are used and
loaded strictly; the encoder and quant_conv (encoding only), ``foundation_model.*`` (DINOv2,
the alignment target in training) and ``loss.*`` (LPIPS and the discriminator) are dropped
and named in a `CheckpointWarning`. With no folder the decoder has random weights (and
identity statistics), says so in ``weights``, and times as the real one does.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adapters.api.checkpoint import (
    CheckpointRef,
    CheckpointWarning,
    check_fits,
    choose_entry,
    fingerprint,
    read_file,
)
from adapters.api.errors import InputError
from adapters.api.sampler import RANDOM_INIT, DecoderInfo

VAE_FILE = "vavae-imagenet256-f16d32-dinov2.pt"
STATS_FILE = "latents_stats.pt"
DOWNSAMPLE = 16  # image side / latent side
LATENT_CHANNELS = 32
USED_PREFIXES = ("decoder.", "post_quant_conv.")
# Why the rest of the VAE file is not loaded, by top-level name; anything else is "not part of decoding".
IGNORED = {"encoder": "the encoder", "quant_conv": "quant_conv (encoding only)",
           "foundation_model": "foundation_model.* (DINOv2, the alignment target in training)",
           "loss": "loss.* (LPIPS and the discriminator)"}
# FLOPs of one 256x256 decode, multiply-add = 2, as torch's FlopCounterMode counts them
# (tests/adapters/facm/test_vavae.py checks it against the counter).
VAVAE_GFLOPS_256 = 252.2
VA_VAE_DECODER = DecoderInfo("va-vae", 41_418_659, VAVAE_GFLOPS_256)


def group_norm(channels: int) -> nn.GroupNorm:
    """The LDM VAE's norm: 32 groups, eps 1e-6, with affine weights."""
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual (a 1x1 ``nin_shortcut`` where the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # (N, C_out, H, W)
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels of a feature map, 1x1-conv projections, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))  # (N, 1, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v, (N, 1, HW, C)
        return x + self.proj_out(out[:, 0].transpose(1, 2).reshape(n, c, h, w))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class LDMDecoder(nn.Module):
    """The LDM VAE decoder (the VA-VAE's by default): z (N, z_channels, r, r) -> image (N, 3, R, R),
    R = r * 2^(len(ch_mult) - 1) = `resolution` for a latent of the trained side.

    Args:
        ch, ch_mult: level widths ch * m, lowest resolution last. num_res_blocks: residual blocks
            per level (the way up has one more). attn_resolutions: feature-map sides at which each
            up block is followed by attention. resolution: the image side the grid sizes are
            reckoned from. z_channels: latent channels.
    """

    def __init__(self, *, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), resolution: int = 256, z_channels: int = LATENT_CHANNELS):
        super().__init__()
        block_in = ch * ch_mult[-1]
        side = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        levels = []
        for level in reversed(range(len(ch_mult))):  # lowest resolution first
            up = nn.Module()
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, ch * ch_mult[level]))
                block_in = ch * ch_mult[level]
                if side in attn_resolutions:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample = Upsample(block_in)
                side *= 2
            levels.insert(0, up)  # up[0] is the full-resolution level, as the reference indexes them
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))  # (N, C, r, r)
        for up in reversed(self.up):
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)  # side doubles
        return self.conv_out(F.silu(self.norm_out(h)))  # (N, 3, R, R)


class VAVAE(nn.Module):
    """The decoding half of the VA-VAE: ``post_quant_conv`` (1x1, z -> z) then `LDMDecoder`."""

    def __init__(self, **decoder_args):
        super().__init__()
        z = decoder_args.get("z_channels", LATENT_CHANNELS)
        self.decoder = LDMDecoder(**decoder_args)
        self.post_quant_conv = nn.Conv2d(z, z, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents z (N, 32, h, w) -> images (N, 3, 16h, 16w), not clamped."""
        return self.decoder(self.post_quant_conv(z))


def check_vae_folder(source: str | Path) -> Path:
    """`source` as a folder holding `VAE_FILE` and `STATS_FILE`; otherwise an InputError naming what is missing."""
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"VA-VAE folder {folder} does not exist; pass vae= a folder laid out like FACM's cache/ "
                         f"({VAE_FILE}, {STATS_FILE}), or vae=random for random decoder weights")
    missing = [name for name in (VAE_FILE, STATS_FILE) if not (folder / name).is_file()]
    if missing:
        raise InputError(f"VA-VAE folder {folder} has no {' or '.join(missing)}; it needs {VAE_FILE} and "
                         f"{STATS_FILE}, as FACM's cache/ holds them (README: download them from the Hugging Face "
                         f"repository Peterande/FACM)")
    return folder


def decoder_state_dict(sd: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """The ``decoder.*`` and ``post_quant_conv.*`` tensors of a VA-VAE state_dict; what else it
    holds is named, by part, in one `CheckpointWarning`."""
    dropped = Counter(key.split(".", 1)[0] for key in sd if not key.startswith(USED_PREFIXES))
    if dropped:
        parts = ", ".join(f"{IGNORED.get(part, part + '.* (not part of decoding)')}: {n} tensors"
                          for part, n in sorted(dropped.items()))
        warnings.warn(f"VA-VAE {what}: decoding uses decoder.* and post_quant_conv.* only; ignored {parts}",
                      CheckpointWarning, stacklevel=4)
    return {k: v for k, v in sd.items() if k.startswith(USED_PREFIXES)}


def read_latent_stats(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``latents_stats.pt``'s mean and std, (1, 32, 1, 1) each, float32; another layout is an InputError."""
    stats = read_file(path)
    shape = (1, LATENT_CHANNELS, 1, 1)
    tensors = [stats.get(key) if isinstance(stats, Mapping) else None for key in ("mean", "std")]
    if not all(isinstance(t, torch.Tensor) and tuple(t.shape) == shape for t in tensors):
        found = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                 for k, v in stats.items()} if isinstance(stats, Mapping) else type(stats).__name__
        raise InputError(f"latent statistics {path} must hold 'mean' and 'std' tensors of shape {shape} "
                         f"(FACM's utils.get_latent_stats), found {found}")
    mean, std = (t.detach().float() for t in tensors)
    return mean, std


class VAVAEDecoder:
    """FACM latents (N, 32, h, w) -> images (N, 3, 16h, 16w) in [-1, 1] (see the module docstring).

    Args:
        source: a folder laid out like FACM's ``cache/``; None or ``"random"``: random weights.
        device, dtype: where and in what precision the decoder runs.

    Example::

        >>> dec = VAVAEDecoder(None)
        >>> dec.weights, dec.params, dec(torch.zeros(1, 32, 2, 2)).shape
        ('random-init', 41418659, torch.Size([1, 3, 32, 32]))
    """

    def __init__(self, source: str | Path | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        from adapters.api.seeding import seeded_init

        device = torch.device(device)
        with seeded_init(device), torch.device(device):
            self.vae = VAVAE()
        if source is None or source == "random":
            self.weights = RANDOM_INIT
            mean, std = torch.zeros(1, LATENT_CHANNELS, 1, 1), torch.ones(1, LATENT_CHANNELS, 1, 1)
        else:
            folder = check_vae_folder(source)
            self.weights = self._load(folder / VAE_FILE)
            mean, std = read_latent_stats(folder / STATS_FILE)
            self.weights += f"+stats:{fingerprint(CheckpointRef(folder / STATS_FILE), None)}"
        self.vae = self.vae.to(dtype).eval().requires_grad_(False)
        self.mean, self.std = mean.to(device), std.to(device)  # (1, 32, 1, 1) each, float32

    def _load(self, path: Path) -> str:
        """Load the decoder half of the VAE file strictly; returns the file's fingerprint and entry."""
        obj = read_file(path)
        entry = "state_dict" if isinstance(obj, Mapping) and "state_dict" in obj else None  # as init_from_ckpt reads it
        sd, entry = choose_entry(obj, entry, path)
        sd = decoder_state_dict(sd, str(path))
        check_fits(self.vae, sd, str(path))
        self.vae.load_state_dict(sd, strict=True)
        return fingerprint(CheckpointRef(path), entry)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.vae.parameters())

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        z = latents.float() * self.std + self.mean  # (N, 32, h, w): FACM's normalisation undone, in float32
        return self.vae.decode(z.to(dtype)).clamp(-1, 1)  # (N, 3, 16h, 16w)
