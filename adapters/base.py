"""`TorchSampler`: the shared half of every PyTorch adapter, and the checks every family repeats.

`TorchSampler` checks inputs, moves them to the model's device and dtype, runs the family's
sampling loop without autograd, refuses non-finite output, and decodes latents through its
decoder: the SD-VAE by default, or what the family's `TorchSampler.make_decoder` builds (FACM's
VA-VAE); built on first use, so listing and counting parameters never pay for it.

`derive_step_noise` and `check_step_noise` serve the samplers that re-noise between steps
(SoFlow, FACM): the draws are each sample's own, derived from its noise.

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

import hashlib
import inspect
import typing
from typing import Any, Protocol

import torch
from torch import nn

from adapters.api.config import check_value
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, as_generate_inputs, check_finite
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


def derive_step_noise(noise: torch.Tensor, num_steps: int, *, tag: bytes) -> torch.Tensor:
    """The re-noising draws (N, k - 1, C, H, W) of each sample, derived from its own noise alone.

    Each sample's draws come from a CPU generator seeded with the SHA-256 of `tag` and its
    noise, drawn one step at a time (so k = 2's draw is k = 3's first). `tag` names the
    family's stream (``b"nfebench/soflow/step-noise/v1"``), so two families never share draws.
    A seeded generator rather than a fixed orthogonal transform of the noise: a transform's
    output is a deterministic linear function of the noise it would re-noise, where the
    references' ``randn_like`` draws are independent of it; a hash-seeded stream is
    (pseudo-)independent and still depends on nothing but the sample. The hash reads the noise
    rounded to bfloat16, so a float32 run and a bfloat16 run of the same noise draw the same.

    Example::

        >>> z = torch.randn(3, 4, 8, 8)
        >>> eps = derive_step_noise(z, 3, tag=b"doc")
        >>> eps.shape, torch.equal(derive_step_noise(z[1:2], 3, tag=b"doc"), eps[1:2])
        (torch.Size([3, 2, 4, 8, 8]), True)
    """
    if num_steps == 1:  # one step re-noises nothing, and reads no values (meta tensors have none)
        return noise.new_empty(noise.shape[0], 0, *noise.shape[1:])
    keys = noise.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16)  # (N, C, H, W), exact bits
    out = torch.empty(noise.shape[0], num_steps - 1, *noise.shape[1:])  # (N, k - 1, C, H, W) float32
    gen = torch.Generator()
    for row, key in enumerate(keys):
        digest = hashlib.sha256(tag + key.numpy().tobytes()).digest()
        gen.manual_seed(int.from_bytes(digest[:8], "little") >> 1)  # 63 bits: a valid torch seed
        for step in range(num_steps - 1):
            torch.randn(tuple(noise.shape[1:]), generator=gen, out=out[row, step])
    return out


def check_step_noise(name: str, step_noise: object, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """`step_noise` if it is a floating tensor of shape (N, num_steps - 1, *noise's sample shape)."""
    expected = (noise.shape[0], num_steps - 1, *noise.shape[1:])
    if not isinstance(step_noise, torch.Tensor) or not step_noise.is_floating_point():
        raise InputError(f"{name}: step_noise must be a floating-point tensor of shape {expected}, "
                         f"got {type(step_noise).__name__}")
    if tuple(step_noise.shape) != expected:
        raise InputError(f"{name}: step_noise has shape {tuple(step_noise.shape)}, expected {expected} "
                         f"(N samples, num_steps - 1 = {num_steps - 1} re-noising draws each)")
    return step_noise


class LatentDecoder(Protocol):
    """What a latent family's decoder offers its sampler and the harness: ``weights`` (RANDOM_INIT
    or its files' fingerprint), ``params`` (decoder parameters) and ``decoder(latents)`` -> images
    in [-1, 1], NCHW. `adapters.vae.SDVAEDecoder` is the default; FACM's VA-VAE is another."""

    weights: str

    @property
    def params(self) -> int: ...

    def __call__(self, latents: torch.Tensor) -> torch.Tensor: ...


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
        self._decoder: LatentDecoder | None = None
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
        noise, labels = as_generate_inputs(self.info, noise, labels)  # lists and numpy arrays too
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
        if noise.shape[0] == 0:  # an empty batch is an empty result, not a reshape error inside a network
            return noise.clone()
        with torch.no_grad():
            x = self._generate(noise, labels, guidance, **family_options)
        return check_finite(x, f"{self.info.name} generate")

    def check_options(self, **options: Any) -> None:
        """Refuse option values that are not of their declared type (the annotations of
        `_generate`, `adapters.api.config.check_value`): "num_steps must be an integer, got 'abc'".
        The harness calls it on every setting before anything is sampled; families with options
        that constrain each other extend it."""
        try:
            hints = typing.get_type_hints(type(self)._generate)
        except (NameError, TypeError):  # an annotation that cannot be resolved: the family checks its own
            hints = {}
        for key, value in options.items():
            if key in hints:
                check_value(self.info.name, key, hints[key], value)

    def make_decoder(self) -> LatentDecoder:
        """The decoder of this sampler's latents, called once, on first use of `decoder`: the SD-VAE
        of `vae_spec` from the ``vae`` source. A family with another decoder overrides it."""
        return SDVAEDecoder(self._vae_source, device=self.device, dtype=self.dtype, spec=self.vae_spec)

    @property
    def decoder(self) -> LatentDecoder | None:
        """The decoder of latent models (`make_decoder`, built on first access); None for pixel models."""
        if self.info.space != "latent":
            return None
        if self._decoder is None:
            self._decoder = self.make_decoder()
        return self._decoder

    @property
    def decoder_weights(self) -> str | None:
        return None if self.decoder is None else self.decoder.weights

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space samples -> images in [-1, 1], NCHW."""
        if self.decoder is None:
            return x.clamp(-1, 1)
        return check_finite(self.decoder(x), f"{self.info.name} decode")
