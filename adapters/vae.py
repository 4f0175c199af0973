"""SD-VAE decode through diffusers' `AutoencoderKL`: sd-vae-ft-ema or -mse, with each family's
latent normalisation.

Which VAE a latent family decodes with, and how its latents map to the VAE's, is a
`VAESpec`: the weights' hub id (ft-ema and ft-mse share one architecture) and a
`LatentNorm`. Most latent models scale the VAE's latents by 0.18215 (`SD_FT_EMA`,
`SD_FT_MSE`); iMF normalises each channel by its dataset mean and std (its family module
defines that spec).

Real weights come from a local folder or the Hugging Face cache, never the network. With
neither, the decoder is built with random weights and says so in `weights`: its timings
are real (compute does not depend on weight values), its images are not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.api.errors import InputError
from adapters.api.sampler import RANDOM_INIT, DecoderInfo

SD_VAE_REPO = "stabilityai/sd-vae-ft-ema"
SD_VAE_MSE_REPO = "stabilityai/sd-vae-ft-mse"
SCALING_FACTOR = 0.18215
# stabilityai/sd-vae-ft-ema config.json; decoder + post_quant_conv = 49,490,199 parameters.
SD_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=SCALING_FACTOR,
)
# FLOPs of one 256x256 decode with a multiply-add counted as 2, as ModelInfo.gflops counts
# (torch's FlopCounterMode counts 622.2; papers print about 310 because they count
# multiply-adds). tests/harness/timing/test_peaks.py checks it against the counter.
DECODER_GFLOPS_256 = 622.2
# What the timing tables say of it (decoder-alone rows are `model="sd-vae"`); the families that
# decode with it name it as their spec's `decoder`.
SD_VAE_DECODER = DecoderInfo("sd-vae", 49_490_199, DECODER_GFLOPS_256)


@dataclass(frozen=True)
class LatentNorm:
    """How a model's latents x become the VAE's latents z, per channel: ``z = x / scale + shift``.

    The SD convention is one scale, 0.18215, and no shift; a family that normalised its
    training latents by per-channel mean m and std s (x = (z - m) / s) has scale 1/s and shift m.
    """

    scale: tuple[float, ...] = (SCALING_FACTOR,) * 4
    shift: tuple[float, ...] = (0.0,) * 4

    def to_vae(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, h, w) in the model's normalisation -> the VAE's latents (N, C, h, w)."""
        scale = torch.tensor(self.scale, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        shift = torch.tensor(self.shift, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x / scale + shift


@dataclass(frozen=True)
class VAESpec:
    """The SD-VAE weights a latent family decodes with (a hub id, found offline) and its latent normalisation."""

    repo: str = SD_VAE_REPO
    norm: LatentNorm = LatentNorm()


SD_FT_EMA = VAESpec(SD_VAE_REPO)
SD_FT_MSE = VAESpec(SD_VAE_MSE_REPO)


def resolve_vae_source(source: str | None, repo: str = SD_VAE_REPO) -> str | None:
    """Where real VAE weights are, or None for random weights.

    `source` (or ``$NFEBENCH_VAE``) may be a local folder holding ``config.json`` and the
    weights, or a hub repo id looked up only in the local Hugging Face cache. The literal
    ``"random"`` asks for random weights. Unset: the cache entry of `repo` (the family's
    VAE, sd-vae-ft-ema by default) if present.
    """
    source = source or os.environ.get("NFEBENCH_VAE")
    if source == "random":
        return None
    if source and Path(source).is_dir():
        if not (Path(source) / "config.json").is_file():
            raise InputError(f"VAE folder {source} has no config.json (expected a diffusers AutoencoderKL folder)")
        return source
    repo = source or repo
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo, local_files_only=True)
    except Exception:
        if source:  # asked for by name and not there: say so rather than fall back
            raise InputError(
                f"VAE {source!r} is neither a local folder nor in the Hugging Face cache; "
                f"download it where you have network, or pass NFEBENCH_VAE=random for random weights"
            ) from None
        return None


def _weights_fingerprint(folder: Path) -> str:
    from adapters.api.checkpoint import file_sha256

    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return file_sha256(folder / name)
    raise InputError(f"VAE folder {folder} has no diffusion_pytorch_model.safetensors or .bin")


class SDVAEDecoder:
    """Latents (N, 4, 32, 32) in a family's normalisation (`VAESpec.norm`; by default scaled by
    0.18215) -> images (N, 3, 256, 256) in [-1, 1].

    Args:
        source: a local diffusers folder or a hub id found in the local cache, "random", or
            None (``$NFEBENCH_VAE``, else `spec.repo` from the cache, else random weights).
        spec: which SD-VAE and latent normalisation the family uses.
    """

    def __init__(self, source: str | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, spec: VAESpec = SD_FT_EMA):
        from diffusers import AutoencoderKL

        self.spec = spec
        path = resolve_vae_source(source, spec.repo)
        if path is None:
            from adapters.api.seeding import seeded_init

            with seeded_init(torch.device(device)), torch.device(device):
                vae = AutoencoderKL(**SD_VAE_CONFIG)
            self.weights = RANDOM_INIT
        else:
            vae = AutoencoderKL.from_pretrained(path, local_files_only=True).to(device)
            self.weights = _weights_fingerprint(Path(path))
        vae.encoder = None  # decode only: the encoder is 34M parameters we never run
        if next(vae.parameters()).dtype != dtype:  # diffusers warns on every .to(dtype), even a no-op
            vae = vae.to(dtype=dtype)
        self.vae = vae.eval().requires_grad_(False)

    @property
    def params(self) -> int:
        return sum(p.numel() for m in (self.vae.decoder, self.vae.post_quant_conv) for p in m.parameters())

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        z = self.spec.norm.to_vae(latents.to(dtype=next(self.vae.parameters()).dtype))  # (N, 4, h, w)
        return self.vae.decode(z).sample.clamp(-1, 1)  # (N, 3, 8h, 8w)
