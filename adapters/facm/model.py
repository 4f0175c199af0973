"""FACM (Flow-Anchored Consistency Models, arXiv 2507.03738): the released checkpoints and their sampler.

The network is `adapters.facm.network.LightningDiT` (LightningDiT-XL/1 on VA-VAE latents
32x16x16), decoded by the VA-VAE (`adapters.facm.vavae`, 16x).

Checkpoints (github:ali-vilab/FACM):

- the released ``100ep-stg2.pt`` / ``250ep-stg2.pt`` / ``400ep-stg2.pt``, written by
  ``utils/extract_ema.py``: ``{"ema": state_dict, "_extracted_from": str}``, rope buffers
  included (checked against this network's tables and dropped);
- a training checkpoint (utils.py ``save_ckpt``): ``{"model", "emas", "opt", "args", "epoch",
  "step"}``, where ``emas`` is a PostHocEMA state_dict with two averages (sigma_rel 0.05 and
  0.2). Its ``ema_models.1.ema_model.*`` (sigma_rel 0.2) is loaded, the one test.py samples
  (``emas.ema_models[1]``) and extract_ema.py extracts; ``ema=model`` picks the raw weights.

Time runs from 0 (noise) to 1 (data) (losses.py: x_t = t x_1 + (1 - t) noise), and
F(x, t, y) is the velocity whose jump to t = 1 is the consistency prediction
x_end = x + (1 - t) F. The sampler is sampler.py's ``consistency_model_sampler``: on
t_i = i / k, each step jumps to data, and between steps the jump is re-noised to t_{i+1},
x <- t_{i+1} x_end + (1 - t_{i+1}) eps_i with fresh standard normal eps_i; the last jump
is the sample. The draws are ``step_noise`` (N, k - 1, 32, 16, 16), or, omitted, derived from
each sample's own noise (`adapters.base.derive_step_noise`), so a sample never depends on
its batch. The state is kept in float32 (the reference keeps it in float64), the network
runs in the sampler's dtype.

Guidance: classifier-free at scale w = 1 + g on all channels, F = F_u + w (F_c - F_u) from
one doubled batch (conditional, then null class 1000), at the steps whose t_i lies in
``guidance_interval`` (0.125 <= t_i <= 1 by default, test.py's ``--glow``), and only for
w > 1, as the reference guides. A guided step costs 2 NFE, any other 1. The default g is 0:
the released checkpoints are distilled with guidance 1.75 built in (train.py: ``cfgw`` 1.0
when distilling). At one step t_0 = 0 lies below the default interval, so guidance there
needs an interval that reaches 0. The reference's ``forward_with_cfg`` (a hard-coded 6.4,
three channels) is not called by any sampler and is not reproduced.

Published (README, ImageNet 256, FID-50K with torch-fidelity against the authors'
``fid-50k-256.npz``): 1.70 at 1 step (400ep-stg2), 1.76 at 1 step (250ep-stg2), 1.32 at
2 steps (100ep-stg2).

Example::

    >>> from adapters import load_sampler
    >>> s = load_sampler("facm-xl1", hidden_size=64, depth=2, num_heads=4, input_size=4, num_classes=10)
    >>> s.generate(torch.randn(2, 32, 4, 4), torch.tensor([1, 2]), guidance=0.75, num_steps=2).shape
    torch.Size([2, 32, 4, 4])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from adapters.api.checkpoint import CheckpointRef, CheckpointWarning
from adapters.api.config import option
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, check_guidance, decoded_side
from adapters.base import (
    TorchSampler,
    check_guided_labels,
    check_heads,
    check_num_steps,
    check_patch_grid,
    check_step_noise,
    derive_step_noise,
)
from adapters.builder import Layout, build_sampler, sample_fields
from adapters.facm.network import LightningDiT, check_rope_tables, released_key
from adapters.facm.vavae import DOWNSAMPLE, VAVAEDecoder
from adapters.flowmatch.model import DiTSize
from adapters.imf.model import check_interval

FAMILY = "facm"
# Domain tag of the derived step noise's seeds, so they are no other family's stream.
STEP_NOISE_TAG = b"nfebench/facm/step-noise/v1"
# PostHocEMA's average that test.py samples and extract_ema.py extracts (sigma_rels (0.05, 0.20): the second).
POSTHOC_EMA_PREFIX = "ema_models.1.ema_model."


@dataclass(frozen=True)
class FACMConfig(DiTSize):
    """Defaults of the FACM id (LightningDiT-XL/1: `DiTSize`'s fields at other sizes); every field
    can be overridden in `load_sampler`."""

    hidden_size: int = option(1152, "transformer width")
    depth: int = option(28, "transformer blocks")
    num_heads: int = option(16, "attention heads (head width divisible by 4: EVA's 2-D rope)")
    mlp_ratio: float = option(4.0, "MLP width / width before SwiGLU's 2/3 (hidden int(2/3 * 4 * 1152) = 3072)")
    patch_size: int = option(1, "latent patch side")
    input_size: int = option(16, "latent side (image side / 16)")
    in_channels: int = option(32, "latent channels")
    num_steps: int = option(1, "default steps k on t_i = i/k (1 for 400ep-stg2 and 250ep-stg2, 2 for 100ep-stg2)")
    guidance: float = option(0.0, "default guidance g >= 0, scale 1 + g (0: the released weights distil 1.75 in)")
    guidance_interval: tuple[float, float] = option(
        (0.125, 1.0), "steps guided: those with lo <= t_i <= hi, FACM's time (0 noise, 1 data; test.py's --glow)")
    vae: str | None = option(None, "VA-VAE folder laid out like FACM's cache/ (see adapters.facm.vavae); "
                                   "None or random: random decoder weights")


def check_facm_guidance(name: str, guidance: object) -> float:
    """g as a float, refused below 0: the reference guides only at scales 1 + g > 1 and would ignore the rest."""
    g = check_guidance(name, guidance)
    if g < 0:
        raise InputError(f"{name}: guidance must be >= 0 (FACM's sampler guides only at scale 1 + g > 1), got {g}")
    return g


def step_times(num_steps: int) -> list[float]:
    """t_i = i / k, i = 0..k, as the reference's float64 ``torch.linspace(0, 1, k + 1)``."""
    return torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64).tolist()


def guided_steps(num_steps: int, guidance: float, interval: tuple[float, float]) -> list[bool]:
    """Which of the k steps are guided: g > 0 and lo <= t_i <= hi (sampler.py ``prepare_model_input``)."""
    lo, hi = interval
    return [guidance > 0 and lo <= t <= hi for t in step_times(num_steps)[:-1]]


def nfe(num_steps: int, guidance: float, interval: tuple[float, float]) -> int:
    """Network evaluations per image: one per step, two for a guided one.

    Example::

        >>> nfe(2, 0.0, (0.125, 1.0)), nfe(2, 0.75, (0.125, 1.0)), nfe(1, 0.75, (0.125, 1.0))
        (2, 3, 1)
    """
    return num_steps + sum(guided_steps(num_steps, guidance, interval))


def select_posthoc_ema(sd: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """The weights of a PostHocEMA state_dict (a training checkpoint's ``emas``): its
    ``ema_models.1.ema_model.*`` with the prefix dropped; the sigma_rel 0.05 average and the
    counters are named in a `CheckpointWarning`. Any other state_dict is returned unchanged."""
    if not any(key.startswith("ema_models.") for key in sd):
        return sd
    chosen = {key.removeprefix(POSTHOC_EMA_PREFIX): v for key, v in sd.items() if key.startswith(POSTHOC_EMA_PREFIX)}
    if not chosen:
        raise InputError(f"checkpoint {what}: the PostHocEMA entry has no {POSTHOC_EMA_PREFIX}* (the sigma_rel 0.2 "
                         f"average test.py samples); pass ema=model for the raw weights")
    warnings.warn(f"checkpoint {what}: loaded PostHocEMA's ema_models.1 (sigma_rel 0.2, as test.py samples); ignored "
                  f"{len(sd) - len(chosen)} tensors (the sigma_rel 0.05 average ema_models.0 and the initted/step "
                  f"counters)", CheckpointWarning, stacklevel=3)
    return chosen


class FACMSampler(TorchSampler):
    """FACM's consistency sampler: jump to data, re-noise, repeat; see the module docstring."""

    def __init__(self, info: ModelInfo, net: LightningDiT, config: FACMConfig, *, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(info, net, device=device, dtype=dtype, vae=config.vae)
        self.config = config

    def make_decoder(self) -> VAVAEDecoder:
        """The VA-VAE from the ``vae`` folder (random weights without one)."""
        return VAVAEDecoder(self._vae_source, device=self.device, dtype=self.dtype)

    def velocity(self, x: torch.Tensor, t: float, labels: torch.Tensor | None, scale: float | None) -> torch.Tensor:
        """F(x, t, y) (N, C, H, W) in float32; with `scale` w, F_u + w (F_c - F_u) from one doubled batch."""
        x = x.to(self.dtype)
        if scale is None:
            return self.net(x, self._time(t, x.shape[0]), labels).float()
        null = torch.full_like(labels, self.config.num_classes)
        both = self.net(torch.cat([x, x]), self._time(t, 2 * x.shape[0]), torch.cat([labels, null])).float()
        cond, uncond = both.chunk(2)  # (N, C, H, W) each
        return uncond + scale * (cond - uncond)

    def _time(self, value: float, n: int) -> torch.Tensor:
        return torch.full((n,), value, device=self.device, dtype=torch.float32)  # (N,)

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None, *,
                  guidance_interval: tuple[float, float] | None = None, num_steps: int | None = None,
                  step_noise: torch.Tensor | None = None) -> torch.Tensor:
        name, c = self.info.name, self.config
        g = check_facm_guidance(name, c.guidance if guidance is None else guidance)
        check_guided_labels(name, g, labels)
        interval = check_interval(name, c.guidance_interval if guidance_interval is None else guidance_interval)
        k = check_num_steps(name, c.num_steps if num_steps is None else num_steps)
        eps = (derive_step_noise(noise, k, tag=STEP_NOISE_TAG) if step_noise is None
               else check_step_noise(name, step_noise, noise, k))
        eps = eps.to(self.device, torch.float32)  # (N, k - 1, C, H, W)
        times, guided = step_times(k), guided_steps(k, g, interval)
        x = noise.float()  # (N, C, H, W)
        for i in range(k):
            x_end = x + (1.0 - times[i]) * self.velocity(x, times[i], labels, 1.0 + g if guided[i] else None)
            if i < k - 1:
                x = times[i + 1] * x_end + (1.0 - times[i + 1]) * eps[:, i]
        return x_end.to(self.dtype)


def build(name: str, config: FACMConfig, *, checkpoint: CheckpointRef | str | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> FACMSampler:
    """Registry builder of the FACM id (see `adapters.load_sampler`).

    Args:
        name: the model id, for messages and `ModelInfo.name`.
        config: a `FACMConfig`.
        checkpoint: a released ``*-stg2.pt`` (its ``ema`` entry) or a training checkpoint (its
            ``emas`` entry's ``ema_models.1``, unless the ref names another entry); None: random
            weights (adaLN-Zero, so F = 0 and every jump returns its input).
        device, dtype: where and in what precision the network runs.

    Example::

        >>> s = build("facm-xl1", FACMConfig(hidden_size=64, depth=2, num_heads=4, input_size=4, num_steps=2))
        >>> s.info.nfe, s.info.sample_shape, s.info.image_size, s.info.weights
        (2, (32, 4, 4), 64, 'random-init')
    """
    steps = check_num_steps(name, config.num_steps)
    guidance = check_facm_guidance(name, config.guidance)
    interval = check_interval(name, config.guidance_interval)
    check_patch_grid(name, config.input_size, config.patch_size)
    check_heads(name, config.hidden_size, config.num_heads)
    head_dim = config.hidden_size // config.num_heads
    if head_dim % 4:
        raise InputError(f"{name}: head width hidden_size / num_heads = {head_dim} must be divisible by 4 (EVA's "
                         f"2-D rope turns channel pairs, half of them by row and half by column)")
    grid = config.input_size // config.patch_size

    def make_net() -> LightningDiT:
        return LightningDiT(input_size=config.input_size, patch_size=config.patch_size,
                            in_channels=config.in_channels, hidden_size=config.hidden_size, depth=config.depth,
                            num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, num_classes=config.num_classes)

    def convert(sd: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
        return check_rope_tables(select_posthoc_ema(sd, what), head_dim, grid, what)

    def describe(net: LightningDiT) -> dict:
        return dict(nfe=nfe(steps, guidance, interval), sequential_steps=steps, num_classes=config.num_classes,
                    **sample_fields("latent", config.in_channels, config.input_size,
                                    image_size=decoded_side("latent", config.input_size, DOWNSAMPLE)))

    return build_sampler(name, FAMILY, make_net=make_net, describe=describe, checkpoint=checkpoint, device=device,
                         dtype=dtype, layout=Layout(rename=released_key, convert=convert),
                         sampler=lambda info, net: FACMSampler(info, net, config, device=torch.device(device),
                                                               dtype=dtype))
