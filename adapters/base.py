"""`TorchSampler`: the shared half of every PyTorch adapter, and the checks every family repeats.

`TorchSampler` checks inputs, moves them to the model's device and dtype, runs the family's
sampling loop without autograd, refuses non-finite output, and decodes latents through the
SD-VAE (built on first use, so listing and counting parameters never pay for it).

The ``check_*`` functions are the config and option checks several families (and their Flax
ports) make, with one wording each, so a user meets the same message whatever the family:

    >>> check_num_steps("sit-b2", 4)
    4
    >>> check_positive_int("pmf-b16", "bottleneck_channels", 0)
    Traceback (most recent call last):
    ...
    adapters.api.errors.InputError: pmf-b16: bottleneck_channels must be a positive integer, got 0
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, check_finite, check_generate_inputs
from adapters.builder import count_params  # noqa: F401  (families count through it)
from adapters.vae import SD_FT_EMA, SDVAEDecoder, VAESpec


def check_positive_int(name: str, what: str, value: object) -> int:
    """`value` if it is a positive int (a bool is not); anything else is an InputError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}: {what} must be a positive integer, got {value!r}")
    return value


def check_num_steps(name: str, num_steps: object) -> int:
    """`num_steps` (a sampler's step count) if it is a positive int; anything else is an InputError."""
    return check_positive_int(name, "num_steps", num_steps)


def check_guided_labels(name: str, guidance: float, labels: object) -> None:
    """Classifier-free guidance needs class labels: a non-zero `guidance` with labels None
    (the null class, where the guided and unguided passes coincide) is an InputError."""
    if labels is None and guidance != 0.0:
        raise InputError(f"{name}: guidance {guidance} needs class labels; pass labels or guidance=0")


def check_patch_grid(name: str, input_size: int, patch_size: int) -> None:
    """A square input of side `input_size` must split into whole patches of side `patch_size`."""
    if input_size % patch_size:
        raise InputError(f"{name}: input_size {input_size} is not a multiple of patch_size {patch_size}")


def check_heads(name: str, hidden_size: int, num_heads: int) -> None:
    """The transformer width must split into `num_heads` whole heads."""
    if hidden_size % num_heads:
        raise InputError(f"{name}: hidden_size {hidden_size} is not divisible by num_heads {num_heads}")


class TorchSampler:
    """Base class: subclasses set `info` and `net` and implement `_generate`.

    `_generate(noise, labels, guidance, **family_options)` receives tensors already on
    the model's device and dtype and returns the model-space sample. Its keyword
    arguments define the family options that `generate` accepts.
    """

    info: ModelInfo
    net: nn.Module

    def __init__(self, info: ModelInfo, net: nn.Module, *, device: torch.device, dtype: torch.dtype,
                 vae: str | None = None, vae_spec: VAESpec = SD_FT_EMA):
        self.info = info
        self.net = net.eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self._vae_source = vae
        self.vae_spec = vae_spec  # which SD-VAE decodes this family's latents, and their normalisation
        self._decoder: SDVAEDecoder | None = None
        # What the last `generate` call reported of itself, e.g. Jacobi iterations per flow block
        # ({"iterations_mean": 7.5, "iterations_max": 12}); families fill it in `_generate`.
        self.last_stats: dict[str, Any] = {}  # JSON-serialisable: numbers and lists of them
        params = inspect.signature(self._generate).parameters
        self.family_options = tuple(k for k in params if k not in ("noise", "labels", "guidance"))

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None,
                  **family_options: Any) -> torch.Tensor:
        raise NotImplementedError

    def generate(self, noise: torch.Tensor, labels: torch.Tensor | None, *, guidance: float | None = None,
                 **family_options: Any) -> torch.Tensor:
        check_generate_inputs(self.info, noise, labels)
        unknown = sorted(set(family_options) - set(self.family_options))
        if unknown:
            raise InputError(
                f"{self.info.name}: unknown option(s) {', '.join(unknown)}; "
                f"this family accepts: {', '.join(self.family_options) or 'none'}"
            )
        noise = noise.to(self.device, self.dtype)
        if labels is not None:
            labels = labels.to(self.device, torch.long)
        self.last_stats = {}
        with torch.no_grad():
            x = self._generate(noise, labels, guidance, **family_options)
        return check_finite(x, f"{self.info.name} generate")

    @property
    def decoder(self) -> SDVAEDecoder | None:
        """The SD-VAE for latent models (built on first access); None for pixel models."""
        if self.info.space != "latent":
            return None
        if self._decoder is None:
            self._decoder = SDVAEDecoder(self._vae_source, device=self.device, dtype=self.dtype, spec=self.vae_spec)
        return self._decoder

    @property
    def decoder_weights(self) -> str | None:
        return None if self.decoder is None else self.decoder.weights

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space samples -> images in [-1, 1], NCHW."""
        if self.decoder is None:
            return x.clamp(-1, 1)
        return check_finite(self.decoder(x), f"{self.info.name} decode")
