"""SiT (github:willisma/SiT): the released Rectified Flow checkpoints, and their ODE sampler.

The network is SiT's, which is DiT's with raw times: `adapters.flowmatch.model.DiT` with
``time_scale=1`` has SiT's parameter names and output layout, so SiT state_dicts load key
for key. SiT trains with learned sigma (2 C output channels) and its forward keeps only the
first C; the learned-sigma rows of ``final_layer.linear`` are dropped at load
(`drop_learned_sigma`, with a `CheckpointWarning` naming them), and the model built here has
C output channels, (hidden_size + 1) * patch_size**2 * C parameters fewer than SiT's module
(`learned_sigma_params`).

Time convention (SiT's linear interpolant with velocity prediction):
x_t = t * data + (1 - t) * noise, so t = 0 is noise and t = 1 is data, and the network
predicts v = data - noise at raw t in [0, 1]. This is the reverse of `adapters.flowmatch`.

Sampling: ``num_steps=k`` steps on the equal grid t_i = i / k, from t = 0 to t = 1.

- ``solver="euler"``: x <- x + dt * v(x, t). One evaluation per step: NFE k.
- ``solver="heun"``: torchdiffeq's fixed-grid ``heun2`` (the explicit trapezoid rule):
  k1 = v(x, t), k2 = v(x + dt k1, t + dt), x <- x + dt (k1 / 2 + k2 / 2). Two evaluations
  per step, the last step included: NFE 2k.

Guidance g (0 = none) is SiT's ``forward_with_cfg`` at scale w = 1 + g: the conditional and
null-class velocities come from one doubled batch, and only the first three channels are
guided, v = v_u + w (v_c - v_u); the others keep the conditional velocity (SiT's choice,
kept from DiT "for exact reproducibility"). Guidance doubles the NFE; the network runs once
per evaluation on the doubled batch, so the dependent passes (`sequential_steps`) are k
(Euler) or 2k (Heun) either way. With g = 0 the batch is not doubled (SiT's sample.py still
doubles it at ``--cfg-scale 1``; the first half is the same velocity).

Correspondence with SiT's ``sample.py ODE``: ``Sampler.sample_ode(num_steps=n)`` integrates
on ``torch.linspace(0, 1, n)``, n grid points and so n - 1 steps. SiT's
``--sampling-method euler --num-sampling-steps 250`` is our ``num_steps=249,
solver="euler"`` (249 evaluations, 498 with guidance), and ``--sampling-method heun2`` is
``solver="heun"``; our ``num_steps=1`` is SiT's ``--num-sampling-steps 2``. sample.py's
default ODE method, dopri5 (adaptive steps), is not reproduced, nor is the SDE sampler.

Decoding: sd-vae-ft-mse with the 0.18215 scale, as sample.py's default (``--vae mse``,
``vae.decode(samples / 0.18215)``).

Example::

    >>> from adapters import load_sampler
    >>> s = load_sampler("sit-b2", hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10)
    >>> s.generate(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), guidance=0.5, num_steps=2).shape
    torch.Size([2, 4, 8, 8])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from adapters.api.checkpoint import CheckpointRef, CheckpointWarning
from adapters.api.config import option
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, check_guidance
from adapters.base import (
    TorchSampler,
    check_guided_labels,
    check_heads,
    check_num_steps,
    check_patch_grid,
)
from adapters.builder import Layout, build_sampler, sample_fields
from adapters.flowmatch.model import DiT, DiTSize
from adapters.vae import SD_FT_MSE

FAMILY = "sit"
SOLVERS = ("euler", "heun")
EVALS_PER_STEP = {"euler": 1, "heun": 2}
GUIDED_CHANNELS = 3  # forward_with_cfg guides channels [:3] only


@dataclass(frozen=True)
class SiTConfig(DiTSize):
    """Defaults of one SiT id (SiT-B/2 here: `DiTSize`'s); every field can be overridden in `load_sampler`."""

    num_steps: int = option(1, "default ODE steps from t = 0 (noise) to 1 (data)")
    solver: str = option("euler", "default ODE solver: euler or heun (torchdiffeq's heun2)")
    guidance: float = option(0.0, "default guidance g (0 = none); SiT's cfg scale is 1 + g")
    vae: str | None = option(None, "sd-vae-ft-mse folder or hub id (see adapters.vae)")


def check_solver(name: str, solver: object) -> str:
    """`solver` if it is one of `SOLVERS`; anything else is an InputError naming them."""
    if solver not in SOLVERS:
        raise InputError(f"{name}: unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    return solver


def nfe(num_steps: int, solver: str, guidance: float) -> int:
    """Network evaluations per image: steps x evaluations per step, doubled with guidance."""
    return num_steps * EVALS_PER_STEP[solver] * (1 if guidance == 0.0 else 2)


def learned_sigma_params(config: SiTConfig) -> int:
    """Parameters of the learned-sigma output rows that SiT's module has and ours drops:
    weight and bias of p*p*C rows of ``final_layer.linear``."""
    return config.patch_size ** 2 * config.in_channels * (config.hidden_size + 1)


def drop_learned_sigma(sd: dict[str, torch.Tensor], config: SiTConfig, what: str) -> dict[str, torch.Tensor]:
    """`sd` with the learned-sigma rows of ``final_layer.linear`` removed, if it has them.

    A token's outputs are laid out (p, q, c) with c fastest over 2C channels, and SiT's
    forward keeps channels c < C after unpatchify; so of each group of 2C rows the first C
    stay. A linear of any other shape is left as it is, for the strict check to name.
    """
    p2, c, d = config.patch_size ** 2, config.in_channels, config.hidden_size
    weight, bias = sd.get("final_layer.linear.weight"), sd.get("final_layer.linear.bias")
    if weight is None or bias is None or tuple(weight.shape) != (p2 * 2 * c, d) or tuple(bias.shape) != (p2 * 2 * c,):
        return sd
    warnings.warn(f"checkpoint {what}: dropped the learned-sigma output channels of final_layer.linear "
                  f"(weight {tuple(weight.shape)} -> {(p2 * c, d)}, bias {tuple(bias.shape)} -> {(p2 * c,)}); "
                  f"SiT's sampler uses only the first {c} channels", CheckpointWarning, stacklevel=3)
    out = dict(sd)
    out["final_layer.linear.weight"] = weight.reshape(p2, 2 * c, d)[:, :c].reshape(p2 * c, d)
    out["final_layer.linear.bias"] = bias.reshape(p2, 2 * c)[:, :c].reshape(p2 * c)
    return out


class SiTSampler(TorchSampler):
    """SiT's probability-flow ODE from noise (t = 0) to data (t = 1); see the module docstring."""

    def __init__(self, info: ModelInfo, net: DiT, config: SiTConfig, *, device: torch.device, dtype: torch.dtype):
        super().__init__(info, net, device=device, dtype=dtype, vae=config.vae, vae_spec=SD_FT_MSE)
        self.config = config

    def velocity(self, x: torch.Tensor, t: float, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """The (guided) velocity at x (N, C, H, W) and time t, as SiT's forward / forward_with_cfg."""
        n = x.shape[0]
        if guidance == 0.0 or labels is None:
            return self.net(x, self._time(t, n), labels)
        null = torch.full_like(labels, self.config.num_classes)
        v = self.net(torch.cat([x, x]), self._time(t, 2 * n), torch.cat([labels, null]))  # (2N, C, H, W)
        v_c, v_u = v.chunk(2)  # (N, C, H, W) each
        k, w = GUIDED_CHANNELS, 1.0 + guidance
        guided = v_u[:, :k] + w * (v_c[:, :k] - v_u[:, :k])  # (N, 3, H, W)
        return torch.cat([guided, v_c[:, k:]], dim=1)

    def _time(self, value: float, n: int) -> torch.Tensor:
        return torch.full((n,), value, device=self.device, dtype=torch.float32)  # (N,)

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None, *,
                  num_steps: int | None = None, solver: str | None = None) -> torch.Tensor:
        name = self.info.name
        g = check_guidance(name, self.config.guidance if guidance is None else guidance)
        check_guided_labels(name, g, labels)
        k = check_num_steps(name, self.config.num_steps if num_steps is None else num_steps)
        solver = check_solver(name, self.config.solver if solver is None else solver)
        times = torch.linspace(0.0, 1.0, k + 1, dtype=torch.float64).tolist()
        x = noise
        for t, t_next in zip(times[:-1], times[1:]):
            dt = t_next - t
            k1 = self.velocity(x, t, labels, g)
            if solver == "euler":
                x = x + dt * k1
            else:  # heun2's tableau: stage 2 at t + dt from the Euler point, weights 1/2, 1/2
                k2 = self.velocity(x + dt * k1, t_next, labels, g)
                x = x + dt * (0.5 * k1 + 0.5 * k2)
        return x


def build(name: str, config: SiTConfig, *, checkpoint: CheckpointRef | str | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SiTSampler:
    """Registry builder for the SiT ids (see `adapters.load_sampler`).

    Args:
        name: the model id, for messages and `ModelInfo.name`.
        config: a `SiTConfig`.
        checkpoint: SiT's released ``SiT-XL-2-256x256.pt`` (a plain state_dict) or a train.py
            checkpoint (``{"model", "ema", "opt", "args"}``: its EMA entry unless the ref
            names another); None: random weights (adaLN-Zero, so zero velocity).
        device, dtype: where and in what precision the network runs.

    Example::

        >>> s = build("sit-b2", SiTConfig(hidden_size=64, depth=2, num_heads=4, input_size=8))
        >>> s.info.nfe, s.info.weights
        (1, 'random-init')
    """
    steps = check_num_steps(name, config.num_steps)
    solver = check_solver(name, config.solver)
    guidance = check_guidance(name, config.guidance)
    check_patch_grid(name, config.input_size, config.patch_size)
    check_heads(name, config.hidden_size, config.num_heads)
    if config.in_channels < GUIDED_CHANNELS:
        raise InputError(f"{name}: in_channels must be at least {GUIDED_CHANNELS} (SiT guides channels 0-2), "
                         f"got {config.in_channels}")

    def make_net() -> DiT:
        return DiT.from_size(config, time_scale=1.0)  # SiT's times are raw t in [0, 1]

    def describe(net: DiT) -> dict:
        return dict(nfe=nfe(steps, solver, guidance), sequential_steps=steps * EVALS_PER_STEP[solver],
                    num_classes=config.num_classes, **sample_fields("latent", config.in_channels, config.input_size))

    return build_sampler(name, FAMILY, make_net=make_net, describe=describe, checkpoint=checkpoint, device=device,
                         dtype=dtype, layout=Layout(convert=lambda sd, what: drop_learned_sigma(sd, config, what)),
                         sampler=lambda info, net: SiTSampler(info, net, config, device=torch.device(device),
                                                              dtype=dtype))
