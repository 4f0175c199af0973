"""The contract every generator family meets: `ModelInfo` and the `Sampler` protocol.

Nothing model-specific lives here. The harness owns noise, labels, timing, quantisation
and metrics; an adapter owns only its network and its sampling loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from adapters.api.errors import InputError

RANDOM_INIT = "random-init"
SPACES = ("pixel", "latent")  # what `ModelInfo.space` may be
LATENT_DOWNSAMPLE = 8  # the SD-VAE decodes a latent of side s to an image of side 8 s (the default)


@dataclass(frozen=True)
class ModelInfo:
    """What a sampler is, in the terms every table uses.

    Example: ``ModelInfo(name="biflow-b2", family="biflow", params=133_000_000, nfe=1,
    sequential_steps=1, space="latent", sample_shape=(4, 32, 32), image_size=256,
    num_classes=1000, gflops=..., weights="random-init")``.
    """

    name: str  # registry id, e.g. "biflow-b2"
    family: str  # e.g. "biflow"
    params: int  # generator parameters, decoder excluded
    nfe: int  # full network evaluations per image at the default options, guidance included
    sequential_steps: int  # dependent forward passes per image (TARFlow: blocks * (T - 1))
    space: str  # "latent" (SD-VAE, decode needed) or "pixel"
    sample_shape: tuple[int, ...]  # per-sample shape of generate()'s input and output
    image_size: int  # side of the decoded image in pixels
    num_classes: int  # 0 for unconditional models
    gflops: float  # GFLOPs of one full network evaluation per image (multiply-add = 2)
    weights: str  # RANDOM_INIT or "sha256:<hex>" of the checkpoint file

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sample_shape"] = list(self.sample_shape)
        return d


@dataclass(frozen=True)
class DecoderInfo:
    """What a latent family's decoder costs, for the tables: its rows' `model` id, its parameters
    and the GFLOPs of one decode at 256 px (multiply-add = 2), which scale with the image's area
    (a decoder is convolutions and attention over a latent grid that grows with the image).

    Example: ``DecoderInfo("sd-vae", 49_490_199, 622.2)``, the SD-VAE's decoder.
    """

    name: str  # `model` of the decoder-alone rows, e.g. "sd-vae"
    params: int
    gflops_256: float

    def gflops(self, image_size: int) -> float:
        """GFLOPs of one decode to an image of side `image_size`."""
        return self.gflops_256 * (image_size / 256) ** 2


@runtime_checkable
class Sampler(Protocol):
    """A generator behind one interface.

    ``generate(noise, labels, guidance=None, **family_options)`` maps noise of shape
    ``(N, *info.sample_shape)`` and integer labels of shape ``(N,)`` in
    ``[0, info.num_classes)`` to model-space samples of the same shape as ``noise``.
    ``decode(x)`` maps model-space samples to images in ``[-1, 1]``, NCHW, at
    ``info.image_size``; it is the identity (plus a clamp) for pixel-space models.

    Example::

        s = load_sampler("sit-b2")
        z = torch.randn(2, *s.info.sample_shape)
        x = s.generate(z, torch.tensor([1, 2]))   # (2, 4, 32, 32)
        img = s.decode(x)                          # (2, 3, 256, 256)
    """

    info: ModelInfo

    def generate(self, noise: torch.Tensor, labels: torch.Tensor | None, *,
                 guidance: float | None = None, **family_options: Any) -> torch.Tensor: ...

    def decode(self, x: torch.Tensor) -> torch.Tensor: ...


def _as_tensor(x: Any, what: str, name: str) -> torch.Tensor:
    """A torch tensor of `x` (a tensor, a numpy array, a jax array or a nested list); anything
    else is an InputError naming what was passed."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        array = np.asarray(x)
        # jax arrays come back read-only; torch warns on (and must not write into) those
        return torch.as_tensor(array if array.flags.writeable else array.copy())
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{name}: {what} must be a tensor, a numpy array or a list of numbers, got "
                         f"{type(x).__name__} ({exc})") from None


def as_generate_inputs(info: ModelInfo, noise: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`noise` and `labels` as torch tensors (from numpy arrays and lists too; labels of any integer
    dtype), checked against `info` (`check_generate_inputs`) and for finite noise: NaN or Inf in the
    noise is the input's fault and is said so, before a sampler could be blamed for it."""
    noise = _as_tensor(noise, "noise", info.name)
    labels = None if labels is None else _as_tensor(labels, "labels", info.name)
    check_generate_inputs(info, noise, labels)
    if noise.numel():
        bad = ~torch.isfinite(noise.reshape(noise.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            raise InputError(f"{info.name}: the noise passed in holds NaN or Inf in {len(rows)} of {noise.shape[0]} "
                             f"samples (batch rows {rows[:8]}{'...' if len(rows) > 8 else ''}); give finite noise, "
                             f"e.g. from adapters.api.seeding.sample_noise")
    return noise, labels


def check_generate_inputs(info: ModelInfo, noise: torch.Tensor,
                          labels: torch.Tensor | None) -> None:
    """Raise InputError unless noise and labels fit `info` (shared by every adapter)."""
    expected = tuple(info.sample_shape)
    if noise.ndim != len(expected) + 1 or tuple(noise.shape[1:]) != expected:
        raise InputError(
            f"{info.name}: noise has shape {tuple(noise.shape)}, expected (N, {', '.join(map(str, expected))})"
        )
    if not noise.is_floating_point():
        raise InputError(f"{info.name}: noise must be a floating-point tensor, got {noise.dtype}")
    if labels is None:
        return
    if labels.ndim != 1 or labels.shape[0] != noise.shape[0]:
        raise InputError(
            f"{info.name}: labels must have shape ({noise.shape[0]},) to match the noise, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"{info.name}: labels must be integers, got {labels.dtype}")
    if info.num_classes == 0:
        raise InputError(f"{info.name} is unconditional: pass labels=None")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise InputError(
            f"{info.name}: labels must lie in [0, {info.num_classes}), "
            f"got values from {int(labels.min())} to {int(labels.max())}"
        )


def check_decode_input(info: ModelInfo, x: Any) -> torch.Tensor:
    """Model-space samples for `decode`, as a tensor of shape (N, *info.sample_shape); another
    shape is an InputError (a decoder would otherwise pass it through or fail deep inside)."""
    x = _as_tensor(x, "the samples to decode", info.name)
    expected = tuple(info.sample_shape)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected or not x.is_floating_point():
        raise InputError(f"{info.name}: decode takes model-space samples of shape (N, {', '.join(map(str, expected))}) "
                         f"as floats, got {tuple(x.shape)} {x.dtype}")
    return x


def weights_with_decoder(weights: str, decoder_weights: str | None) -> str:
    """A row's `weights` for decoded images: the generator's, plus the decoder's if any
    (``"random-init+vae:random-init"``), so a row never hides a random decoder."""
    return weights if decoder_weights is None else f"{weights}+vae:{decoder_weights}"


def check_space(name: str, space: str) -> str:
    """`space` if it is one of `SPACES`; anything else is an InputError naming them."""
    if space not in SPACES:
        raise InputError(f"{name}: space must be 'pixel' or 'latent', got {space!r}")
    return space


def decoded_side(space: str, side: int, downsample: int = LATENT_DOWNSAMPLE) -> int:
    """Side in pixels of the image that a sample of side `side` in `space` decodes to, for a decoder
    that upsamples by `downsample` (the SD-VAE's 8 by default; FACM's VA-VAE 16)."""
    return downsample * side if space == "latent" else side


def check_guidance(name: str, guidance: object) -> float:
    """A guidance scale as a float; anything but a finite real number is an InputError."""
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
        raise InputError(f"{name}: guidance must be a finite number, got {guidance!r}")
    return float(guidance)


class NonFiniteSampleError(RuntimeError):
    """A sampler produced NaN or Inf: reported, never passed on silently."""


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """Return `x` unchanged, or raise NonFiniteSampleError naming `what` and the bad rows."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise NonFiniteSampleError(
            f"{what}: non-finite values in {len(rows)} of {x.shape[0]} samples "
            f"(batch rows {rows[:8]}{'...' if len(rows) > 8 else ''}); check the checkpoint, "
            f"the dtype and the guidance scale"
        )
    return x
