"""Decoupled MeanFlow (DMF, arXiv 2510.24474; github:kyungmnlee/dmf): the decoupled DiT and its sampler.

The network is the official ``DMFT`` (``models/dmft.py``), which is SiT's DiT with its blocks
split in two: the first ``dmf_depth`` blocks are conditioned on emb(t) + y, the rest and the
final layer on emb(r) + y, both times embedded by one shared ``t_embedder`` on raw t (no
x1000). Its parameter names are SiT's, so `DecoupledDiT` builds on
`adapters.flowmatch.model.DiT` (``time_scale=1``) and adds only the second time and, for the
512 px model, RMSNorm on each head's queries and keys (``qk_norm``).

Time convention (the official one): x_t = (1 - t) data + t noise, t = 1 is noise. The network
predicts the average velocity u(x, t, r) over [r, t], so x_r = x_t + (r - t) u.

Checkpoints: the released files are plain state_dicts, which generate.py loads with
``strict=False`` into a model without the training-only log-variance head. Training builds
that head (``use_logvar=True``), so a file may hold ``logvar_linear.{weight,bias}``: exactly
those two are ignored, named in a `CheckpointWarning`, and the rest loads strictly
(``pos_embed`` included). The official RMSNorm calls its weight ``scale``; it is renamed to
``weight`` on load (`reference_key`). Training files (``{"model", "ema", "opt", "args",
"steps"}``) load their EMA entry unless another is chosen.

Sampling is the official ``samplers.euler_sampler``: k Euler steps on t_i = linspace(1, 0,
k + 1), shifted as t <- s t / (1 + (s - 1) t), each x <- x + (t_{i+1} - t_i) u(x, t_i, r =
t_{i+1}, y). The state is integrated in float64 and the network runs in the model's dtype,
as there. Guidance g is classifier-free guidance at scale w = 1 + g, applied on the steps
whose (shifted) t_i lies in ``guidance_interval``: the batch is doubled with the null label
and u = u_null + w (u_y - u_null). NFE = k + the number of guided steps. The released models
were trained with model guidance (omega 0.6 on [0, 0.7]), so their evaluation default is
g = 0.

Decoding: sd-vae-ft-ema, latents / 0.18215 (generate.py; training encoded with ft-mse).

Example::

    >>> from adapters import load_sampler
    >>> s = load_sampler("dmf-b2", hidden_size=64, depth=3, dmf_depth=2, num_heads=4, input_size=8)
    >>> z, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    >>> s.generate(z, y, guidance=1.0, guidance_interval=(0.0, 0.7), num_steps=2, shift=1.5).shape
    torch.Size([2, 4, 8, 8])
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from adapters.api.checkpoint import CheckpointRef
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
from adapters.imf.model import check_interval
from adapters.layers import RMSNorm
from adapters.vae import SD_FT_EMA

FAMILY = "dmf"
# The training-only loss-weighting head of train_dmf.py (use_logvar=True); sampling never runs it.
LOGVAR_KEYS = ("logvar_linear.weight", "logvar_linear.bias")
LOGVAR_REASON = ("the training-only log-variance head (train_dmf.py builds use_logvar=True; generate.py samples "
                 "without it)")


def reference_key(key: str) -> str:
    """A key of the official state_dict -> this module's: the official RMSNorm's ``scale`` is
    ``weight`` here (``blocks.0.attn.q_norm.scale`` -> ``blocks.0.attn.q_norm.weight``); every
    other key is the same."""
    return re.sub(r"\.([qk]_norm)\.scale$", r".\1.weight", key)


class DecoupledDiT(DiT):
    """The official ``DMFT`` in evaluation mode: SiT's DiT whose blocks after `dmf_depth`, and
    final layer, are conditioned on the second time r.

    Args:
        input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio,
            num_classes: as `adapters.flowmatch.model.DiT` (DMFT-B/2: 32, 2, 4, 768, 12, 12, 4, 1000).
        dmf_depth: blocks conditioned on t (the official "encoder"); the other depth - dmf_depth on r.
        qk_norm: RMSNorm on each head's queries and keys (the 512 px model).

    `forward(x, t, r, y)`: x (N, C, H, W), t and r (N,) raw times in [0, 1], y (N,) labels
    (the null class is ``num_classes``) or None -> u (N, C, H, W).

    Example::

        >>> net = DecoupledDiT(input_size=8, hidden_size=32, depth=3, num_heads=2, num_classes=10, dmf_depth=2)
        >>> net(torch.randn(2, 4, 8, 8), torch.ones(2), torch.zeros(2), torch.tensor([0, 1])).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(self, *, input_size: int = 32, patch_size: int = 2, in_channels: int = 4, hidden_size: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, num_classes: int = 1000,
                 dmf_depth: int = 8, qk_norm: bool = False):
        if not 0 <= dmf_depth <= depth:
            raise ValueError(f"dmf_depth {dmf_depth} must lie in [0, depth={depth}]")
        super().__init__(input_size=input_size, patch_size=patch_size, in_channels=in_channels,
                         hidden_size=hidden_size, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                         num_classes=num_classes, time_scale=1.0)
        self.dmf_depth = dmf_depth
        if qk_norm:  # DiT's attention applies q_norm / k_norm (identities by default) before the product
            for block in self.blocks:
                block.attn.q_norm = RMSNorm(block.attn.head_dim)
                block.attn.k_norm = RMSNorm(block.attn.head_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, r: torch.Tensor,  # type: ignore[override]
                y: torch.Tensor | None) -> torch.Tensor:
        x = self.x_embedder(x) + self.pos_embed.to(x.dtype)  # (N, T, D)
        y_emb = self.y_embedder(y, x.shape[0])  # (N, D)
        c_t = self.t_embedder(t) + y_emb  # (N, D)
        for block in self.blocks[:self.dmf_depth]:
            x = block(x, c_t)  # (N, T, D)
        c_r = self.t_embedder(r) + y_emb  # the same embedder, on the other time
        for block in self.blocks[self.dmf_depth:]:
            x = block(x, c_r)
        return self.unpatchify(self.final_layer(x, c_r))  # (N, C, H, W)

    def flops(self) -> int:
        """DiT's count, plus the shared time embedder's second run (on r)."""
        return super().flops() + self.t_embedder.flops()


@dataclass(frozen=True)
class DMFConfig(DiTSize):
    """Defaults of one DMF id (DMFT-B/2 at 256 px here: `DiTSize`'s); every field can be overridden
    in `load_sampler`."""

    dmf_depth: int = option(8, "blocks conditioned on t; the rest and the final layer on r (2/3 of depth)")
    qk_norm: bool = option(False, "RMSNorm on queries and keys (the 512 px model)")
    num_steps: int = option(1, "default Euler steps of the average velocity from t = 1 (noise) to 0")
    guidance: float = option(0.0, "default CFG g at scale w = 1 + g (0 = none; model guidance is trained in)")
    guidance_interval: tuple[float, float] = option((0.0, 1.0), "default (t_min, t_max) of the guided steps, "
                                                                "on the shifted t")
    shift: float = option(1.0, "default time shift s: t <- s t / (1 + (s - 1) t) (the official 512 px runs use 1.5)")
    vae: str | None = option(None, "sd-vae-ft-ema folder or hub id (see adapters.vae)")


def check_dmf_guidance(name: str, guidance: object) -> float:
    """g as a float, refused below 0: the CFG scale is w = 1 + g, and the official sampler
    treats any w <= 1 as no guidance, so a negative g would be a label for nothing."""
    g = check_guidance(name, guidance)
    if g < 0:
        raise InputError(f"{name}: guidance must be >= 0 (the CFG scale is 1 + g; 0 means none), got {g}")
    return g


def check_shift(name: str, shift: object) -> float:
    """`shift` as a float if it is a finite number > 0 (the shifted grid then runs from 1 to 0)."""
    ok = not isinstance(shift, bool) and isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0
    if not ok:
        raise InputError(f"{name}: shift must be a finite number > 0 (1 = no shift), got {shift!r}")
    return float(shift)


def shifted_times(num_steps: int, shift: float) -> list[float]:
    """The k + 1 times 1 = t_0 > ... > t_k = 0 of the official grid, in float64: equal steps,
    then t <- s t / (1 + (s - 1) t) unless s is 1."""
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1.0) * t)
    return t.tolist()


def guided(t: float, guidance: float, interval: tuple[float, float]) -> bool:
    """Whether the step from t is guided: w = 1 + g > 1 and t_min <= t <= t_max."""
    return 1.0 + guidance > 1.0 and interval[0] <= t <= interval[1]


def nfe(num_steps: int, shift: float, guidance: float, interval: tuple[float, float]) -> int:
    """Network evaluations per image: one per step, plus the null-class half of each guided step."""
    times = shifted_times(num_steps, shift)[:-1]
    return num_steps + sum(guided(t, guidance, interval) for t in times)


class DMFSampler(TorchSampler):
    """The official Euler sampler of the average velocity (see the module docstring).

    `generate(noise, labels, guidance=g, guidance_interval=(t_min, t_max), num_steps=k,
    shift=s)`; omitted options take the config's. Labels None samples the null class, where
    guidance has no meaning and g > 0 is refused.
    """

    def __init__(self, info: ModelInfo, net: DecoupledDiT, config: DMFConfig, *, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(info, net, device=device, dtype=dtype, vae=config.vae, vae_spec=SD_FT_EMA)
        self.config = config

    def average_velocity(self, x: torch.Tensor, t: float, r: float, labels: torch.Tensor | None, guidance: float,
                         guide: bool) -> torch.Tensor:
        """u (N, C, H, W) in float64 at x (float64) over [r, t], guided on one doubled batch if `guide`."""
        n = x.shape[0]
        inputs, y = x, labels
        if guide:
            inputs = torch.cat([x, x])  # (2N, C, H, W)
            y = torch.cat([labels, torch.full_like(labels, self.config.num_classes)])
        m = inputs.shape[0]
        # The official times: a float32 fill of the float64 grid value, then the model's dtype.
        times = [torch.full((m,), v, dtype=torch.float32, device=x.device).to(self.dtype) for v in (t, r)]
        u = self.net(inputs.to(self.dtype), *times, y).to(torch.float64)
        if not guide:
            return u
        u_y, u_null = u[:n], u[n:]
        return u_null + (1.0 + guidance) * (u_y - u_null)

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None, *,
                  guidance_interval: tuple[float, float] | None = None, num_steps: int | None = None,
                  shift: float | None = None) -> torch.Tensor:
        name, c = self.info.name, self.config
        g = check_dmf_guidance(name, c.guidance if guidance is None else guidance)
        interval = check_interval(name, c.guidance_interval if guidance_interval is None else guidance_interval)
        k = check_num_steps(name, c.num_steps if num_steps is None else num_steps)
        s = check_shift(name, c.shift if shift is None else shift)
        check_guided_labels(name, g, labels)
        times = shifted_times(k, s)
        x = noise.to(torch.float64)  # (N, C, H, W): the official sampler integrates in float64
        for t, r in zip(times[:-1], times[1:]):
            x = x + (r - t) * self.average_velocity(x, t, r, labels, g, guided(t, g, interval))
        return x.to(noise.dtype)


def check_config(name: str, config: DMFConfig) -> None:
    """Raise an InputError naming the first field of `config` that cannot build or sample."""
    check_patch_grid(name, config.input_size, config.patch_size)
    check_heads(name, config.hidden_size, config.num_heads)
    if not 0 <= config.dmf_depth <= config.depth:
        raise InputError(f"{name}: dmf_depth {config.dmf_depth} must lie in [0, depth={config.depth}]")
    if not isinstance(config.qk_norm, bool):
        raise InputError(f"{name}: qk_norm must be true or false, got {config.qk_norm!r}")
    check_num_steps(name, config.num_steps)
    check_dmf_guidance(name, config.guidance)
    check_interval(name, config.guidance_interval)
    check_shift(name, config.shift)


def build(name: str, config: DMFConfig, *, checkpoint: CheckpointRef | str | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> DMFSampler:
    """Registry builder of the DMF ids (see `adapters.load_sampler`).

    Args:
        name: the model id, for messages and `ModelInfo.name`.
        config: a `DMFConfig`.
        checkpoint: a released file (``dmf_xl_2_256.pt``, a plain state_dict, with or without
            ``logvar_linear.*``) or a train_dmf.py checkpoint (its EMA entry unless the ref names
            another); None: random weights (adaLN-Zero, so zero velocity).
        device, dtype: where and in what precision the network runs.

    Example::

        >>> s = build("dmf-b2", DMFConfig(hidden_size=64, depth=3, dmf_depth=2, num_heads=4, input_size=8,
        ...                               num_steps=4, guidance=1.0, guidance_interval=(0.0, 0.7)))
        >>> s.info.nfe, s.info.sequential_steps  # t = 1, 0.75, 0.5, 0.25: the last two are guided
        (6, 4)
    """
    check_config(name, config)

    def make_net() -> DecoupledDiT:
        return DecoupledDiT(input_size=config.input_size, patch_size=config.patch_size,
                            in_channels=config.in_channels, hidden_size=config.hidden_size, depth=config.depth,
                            num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, num_classes=config.num_classes,
                            dmf_depth=config.dmf_depth, qk_norm=config.qk_norm)

    def describe(net: DecoupledDiT) -> dict:
        return dict(nfe=nfe(config.num_steps, config.shift, config.guidance, config.guidance_interval),
                    sequential_steps=config.num_steps, num_classes=config.num_classes,
                    **sample_fields("latent", config.in_channels, config.input_size))

    layout = Layout(rename=reference_key, ignore=lambda key: key in LOGVAR_KEYS, ignore_reason=LOGVAR_REASON)
    return build_sampler(name, FAMILY, make_net=make_net, describe=describe, checkpoint=checkpoint, device=device,
                         dtype=dtype, layout=layout,
                         sampler=lambda info, net: DMFSampler(info, net, config, device=torch.device(device),
                                                              dtype=dtype))
