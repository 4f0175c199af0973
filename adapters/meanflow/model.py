"""The official MeanFlow (github:Gsunshine/meanflow): its DiT, its sampler and its config.

Network: ``models_dit.DiT`` as ``MeanFlow(model_str=...)`` builds it for sampling (class
dropout 0): DiT with adaLN-Zero blocks (LayerNorm without affine weights, eps 1e-6;
tanh-GELU MLP of 4x width; fused qkv with bias), a stride-p patch embedding, fixed 2-D
sin-cos positions computed in its forward (not a parameter), a label table of
``num_classes + 1`` rows (the last is the null class), and two timestep embedders on raw
times in [0, 1]: ``t_embedder`` for t and ``h_embedder`` for the interval h = t - r, summed
into the conditioning c = emb_t(t) + emb_h(h) + emb_y(y). That is
`adapters.flowmatch.model.DiT` with ``two_times=True``, ``time_scale=1`` and
``computed_positions=True``, so the parameter count is the official module's:
131,165,248 for DiT-B/4 (64 tokens of the 4x32x32 latent).

Time convention (meanflow.py): z_t = (1 - t) x + t e, so t = 1 is noise and t = 0 is data;
the network predicts the average velocity u(z_t, r, t) over [r, t], so z_r = z_t - (t - r) u.

Sampling (``generate`` with ``sample_one_step``): k steps on linspace(1, 0, k + 1), each
z <- z - (t - r) u(z, t, h = t - r, y): one network evaluation, so NFE k. The official code
takes the grid from ``sampling_timesteps`` and, when that is unset, uses [1, 0] whatever
``num_steps`` is, so its steps after the first repeat t = r = 0 and change nothing; k steps
here are the official sampler with ``sampling_timesteps = linspace(1, 0, k + 1)``.

Guidance is trained in (configs/default.py: ``guidance_eq='cfg'``, omega 1, kappa 0.5; the
README's effective scale omega / (1 - kappa) = 2), so sampling never runs an unconditional
pass. `MeanFlowConfig.guidance` records the trained scale in the harness convention
g = w - 1 (1.0 for the released recipe, 0.0 for a ``guidance_eq='none'`` checkpoint), and
``generate(guidance=g)`` accepts only that g: another would label a row with a scale that
was not run. Labels None sample the null class, as the official ``u_fn`` does with
``y = num_classes``.

Decoding: sd-vae-ft-mse with the 0.18215 scale (utils/vae_util.py: ``pcuenq/sd-vae-ft-mse-flax``,
``decode(latents / 0.18215)``).

Example::

    >>> from adapters import load_sampler
    >>> s = load_sampler("meanflow-b4", hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10)
    >>> s.generate(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), num_steps=2).shape
    torch.Size([2, 4, 8, 8])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from adapters.api.checkpoint import CheckpointRef
from adapters.api.config import option
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, check_guidance
from adapters.base import TorchSampler, check_heads, check_num_steps, check_patch_grid
from adapters.builder import build_sampler, sample_fields
from adapters.flowmatch.model import DiT, DiTSize, rename_steps_option, take_steps_alias
from adapters.meanflow.checkpoint import LAYOUT
from adapters.vae import SD_FT_MSE

FAMILY = "meanflow"
# configs/default.py trains with omega 1, kappa 0.5: effective scale w = omega / (1 - kappa) = 2, g = w - 1.
TRAINED_GUIDANCE = 1.0


@dataclass(frozen=True)
class MeanFlowConfig(DiTSize):
    """Defaults of one MeanFlow id (DiT-B/2's sizes here, `DiTSize`'s); every field can be
    overridden in `load_sampler`."""

    num_steps: int = option(1, "default steps on linspace(1, 0, k + 1) (the official sampling.num_steps)")
    guidance: float = option(TRAINED_GUIDANCE, "the guidance trained into the weights, g = w - 1 (1.0: omega 1, "
                                               "kappa 0.5; 0.0: guidance_eq='none'); generate accepts only it")
    vae: str | None = option(None, "sd-vae-ft-mse folder or hub id (see adapters.vae)")
    steps: int | None = option(None, "deprecated name of num_steps: sets it, with a DeprecationWarning")

    def __post_init__(self):
        take_steps_alias(self)


def check_trained_guidance(name: str, guidance: float, trained: float) -> None:
    """MeanFlow's guidance is trained into the weights: any g but `trained` is an InputError."""
    if guidance != trained:
        raise InputError(
            f"{name}: MeanFlow's guidance is trained into the weights (g = {trained}, cfg scale {1.0 + trained}); "
            f"guidance {guidance} cannot be run at sampling time. Pass guidance=None, or set the config option "
            f"guidance= to the scale the checkpoint was trained with")


class MeanFlowSampler(TorchSampler):
    """The official sampler: z <- z - (t - r) u(z, t, t - r, y) on linspace(1, 0, k + 1) (see the module docstring)."""

    def __init__(self, info: ModelInfo, net: DiT, config: MeanFlowConfig, *, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(info, net, device=device, dtype=dtype, vae=config.vae, vae_spec=SD_FT_MSE)
        self.config = config

    def generate(self, noise: torch.Tensor, labels: torch.Tensor | None, *, guidance: float | None = None,
                 **options: Any) -> torch.Tensor:
        """`TorchSampler.generate`, also taking the deprecated ``steps`` for ``num_steps``."""
        return super().generate(noise, labels, guidance=guidance, **rename_steps_option(self.info.name, options))

    def _time(self, value: float, n: int) -> torch.Tensor:
        return torch.full((n,), value, device=self.device, dtype=torch.float32)  # (N,)

    def average_velocity(self, z: torch.Tensor, t: float, h: float, labels: torch.Tensor | None) -> torch.Tensor:
        """u(z, t, h = t - r, y) of z (N, C, H, W) at scalar times (the official ``u_fn``)."""
        n = z.shape[0]
        return self.net(z, self._time(t, n), labels, self._time(h, n))

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None, *,
                  num_steps: int | None = None) -> torch.Tensor:
        name = self.info.name
        if guidance is not None:
            check_trained_guidance(name, check_guidance(name, guidance), self.config.guidance)
        k = check_num_steps(name, self.config.num_steps if num_steps is None else num_steps)
        times = torch.linspace(1.0, 0.0, k + 1, dtype=torch.float64).tolist()
        z = noise
        for t, r in zip(times[:-1], times[1:]):
            z = z - (t - r) * self.average_velocity(z, t, t - r, labels)
        return z


def build(name: str, config: MeanFlowConfig, *, checkpoint: CheckpointRef | str | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> MeanFlowSampler:
    """Registry builder for the MeanFlow ids (see `adapters.load_sampler`).

    Args:
        name: the model id, for messages and `ModelInfo.name`.
        config: a `MeanFlowConfig`.
        checkpoint: the released checkpoint, a folder: the one holding ``checkpoint_<step>/``
            (the README's ``load_from``) or that step folder, read with orbax and its
            ``ema_params`` loaded (``ema=params`` picks the raw weights); or a torch state_dict
            of this network. None: random weights (adaLN-Zero, so zero velocity).
        device, dtype: where and in what precision the network runs.

    Example::

        >>> s = build("meanflow-b4", MeanFlowConfig(patch_size=4, hidden_size=64, depth=2, num_heads=4))
        >>> s.info.nfe, s.info.weights, s.info.sample_shape
        (1, 'random-init', (4, 32, 32))
    """
    steps = check_num_steps(name, config.num_steps)
    check_guidance(name, config.guidance)
    check_patch_grid(name, config.input_size, config.patch_size)
    check_heads(name, config.hidden_size, config.num_heads)

    def make_net() -> DiT:
        return DiT.from_size(config, two_times=True, time_scale=1.0, computed_positions=True)

    def describe(net: DiT) -> dict:
        return dict(nfe=steps, sequential_steps=steps, num_classes=config.num_classes,
                    **sample_fields("latent", config.in_channels, config.input_size))

    return build_sampler(name, FAMILY, make_net=make_net, describe=describe, checkpoint=checkpoint, device=device,
                         dtype=dtype, layout=LAYOUT,
                         sampler=lambda info, net: MeanFlowSampler(info, net, config, device=torch.device(device),
                                                                   dtype=dtype))
