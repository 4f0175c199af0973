"""`TorchSampler`: the shared half of every PyTorch adapter.

It checks inputs, moves them to the model's device and dtype, runs the family's sampling
loop without autograd, refuses non-finite output, and decodes latents through the SD-VAE
(built on first use, so listing and counting parameters never pay for it).
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
