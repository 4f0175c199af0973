"""SoFlow (Solution Flow Models, arXiv 2512.15657): the released ImageNet 256 checkpoints and their sampler.

The network is SoFlow's ``dit.DiT`` (github:zlab-princeton/SoFlow), which is DiT with
``learn_sigma=False``, ``mlp_ratio=4``, raw times and a second `TimestepEmbedder`,
``s_embedder``, that embeds the interval t - s; the conditioning is
c = emb_t(t) + emb_s(t - s) + emb_y(y). That is `adapters.flowmatch.model.DiT` with
``two_times=True`` and ``time_scale=1``: its ``h_embedder`` embeds MeanFlow's interval
t - r the same way, so only the checkpoint's names differ (`released_key`). The label table
has the null row 1000 (SoFlow builds it when ``cfg_drop_rate > 0``, and the CFG-trained
"cond" rows use imagenet.yaml's 0.1); labels None mean that null row, as ``dit.DiT.forward`` does.

Checkpoints: ``SoFlow/<size>-cond/ckpts/<step>.pt`` as train.py writes it,
``{"model", "ema_model", "optimizer", "finished_steps", "finished_epochs"}`` with keys
``network.*`` (the ``Soflow`` wrapper's state_dict); inference.py loads ``ema_model``
strictly, and so does this module once ``network.`` is dropped (``ema=model`` picks the raw
weights instead).

Time convention (Linear noising): x_t = (1 - t) x_0 + t noise, so t = 1 is noise. The
network F predicts the solution function f(x_t, t, s) = a(t, s) x_t + b(t, s) F(x_t, t, s),
with Euler coefficients a = 1 and b = s - t, so jumping to data is
f(x, t, 0) = x - t F(x, t, s = 0, y).

Sampling (inference.py's loop): ``num_steps=k`` on t_i = 1 - i / k. Every step jumps to
t = 0 from t_i, and between steps the jump is re-noised to t_{i+1},
x <- (1 - t_{i+1}) f + t_{i+1} eps_i, with fresh standard normal eps_i; NFE is k. The
re-noising draws are ``step_noise`` (N, k - 1, C, H, W); without it they are derived from
each sample's own noise (`derive_step_noise`), so a sample never depends on its batch.

Guidance is trained in (imagenet.yaml: cfg_scale 3.0, mix_ratio 0.25, decayed above
t = 0.8), so the sampler runs one evaluation per step and a guidance other than 0 is refused.

Decoding: sd-vae-ft-mse with the 0.18215 scale (inference.py: ``vae.decode(x / 0.18215)``).
inference.py then quantises as ``(127.5 x + 128).clamp(0, 255).to(uint8)``, DiT's rounding,
where nfebench's metrics quantise every family ADM's way (`harness.metrics.preprocess`).

Example::

    >>> from adapters import load_sampler
    >>> s = load_sampler("soflow-b2", hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10)
    >>> s.generate(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), num_steps=2).shape
    torch.Size([2, 4, 8, 8])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adapters.api.checkpoint import CheckpointRef
from adapters.api.config import option
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, check_guidance
from adapters.base import (
    TorchSampler,
    check_heads,
    check_num_steps,
    check_patch_grid,
    check_step_noise,
)
from adapters.base import derive_step_noise as derive_own_step_noise
from adapters.builder import Layout, build_sampler, sample_fields
from adapters.flowmatch.model import DiT, DiTSize
from adapters.vae import SD_FT_MSE

FAMILY = "soflow"
# The noising path and solution coefficients of the reference's imagenet.yaml, the only ones this
# sampler implements; the code's other option, "Trig", changes both the path and f's form.
NOISING_TYPES = ("Linear",)
COEFFICIENT_TYPES = ("Euler",)
# Domain tag of the derived step noise's seeds, so they are no other stream's.
STEP_NOISE_TAG = b"nfebench/soflow/step-noise/v1"


@dataclass(frozen=True)
class SoFlowConfig(DiTSize):
    """Defaults of one SoFlow id (SoFlow-B/2 here: `DiTSize`'s); every field can be overridden in
    `load_sampler`."""

    num_steps: int = option(1, "default steps k on t_i = 1 - i/k (NFE k; re-noised between steps)")
    noising_type: str = option("Linear", "noising path of the checkpoint's config.yaml (only Linear)")
    coefficient_type: str = option("Euler", "solution-function coefficients of config.yaml (only Euler)")
    vae: str | None = option(None, "sd-vae-ft-mse folder or hub id (see adapters.vae)")


def released_key(key: str) -> str:
    """A key of SoFlow's checkpoint -> this network's: the ``Soflow`` wrapper's ``network.``
    prefix dropped, and ``s_embedder`` (SoFlow's interval embedder) named ``h_embedder``."""
    key = key.removeprefix("network.")
    return "h_embedder." + key.removeprefix("s_embedder.") if key.startswith("s_embedder.") else key


def check_no_guidance(name: str, guidance: object) -> None:
    """None or 0: SoFlow's guidance is trained into the weights and cannot be set at sampling time."""
    if guidance is not None and check_guidance(name, guidance) != 0.0:
        raise InputError(f"{name}: SoFlow's guidance is trained into the weights (imagenet.yaml: cfg_scale 3.0, "
                         f"mix_ratio 0.25); it cannot be set at sampling time, got guidance={guidance!r}. "
                         f"Pass guidance=None or 0")


def derive_step_noise(noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """SoFlow's re-noising draws (N, k - 1, C, H, W), each sample's own: `adapters.base.derive_step_noise`
    on SoFlow's stream (`STEP_NOISE_TAG`)."""
    return derive_own_step_noise(noise, num_steps, tag=STEP_NOISE_TAG)


class SoFlowSampler(TorchSampler):
    """SoFlow's few-step sampler: jump to data, re-noise, repeat; see the module docstring."""

    def __init__(self, info: ModelInfo, net: DiT, config: SoFlowConfig, *, device: torch.device, dtype: torch.dtype):
        super().__init__(info, net, device=device, dtype=dtype, vae=config.vae, vae_spec=SD_FT_MSE)
        self.config = config

    def solution(self, x: torch.Tensor, t: float, labels: torch.Tensor | None) -> torch.Tensor:
        """f(x, t, 0) = x - t F(x, t, s = 0, y): the jump from time t to data, x (N, C, H, W)."""
        time = torch.full((x.shape[0],), t, device=self.device, dtype=torch.float32)  # (N,)
        return x - t * self.net(x, time, labels, time)  # the interval t - s is t itself at s = 0

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None, *,
                  num_steps: int | None = None, step_noise: torch.Tensor | None = None) -> torch.Tensor:
        name = self.info.name
        check_no_guidance(name, guidance)
        k = check_num_steps(name, self.config.num_steps if num_steps is None else num_steps)
        eps = derive_step_noise(noise, k) if step_noise is None else check_step_noise(name, step_noise, noise, k)
        eps = eps.to(self.device, self.dtype)  # (N, k - 1, C, H, W)
        times = [1.0 - i / k for i in range(k + 1)]  # inference.py's eval_time, in the same arithmetic
        x = noise
        for i in range(k - 1):
            t_next = times[i + 1]
            x = (1.0 - t_next) * self.solution(x, times[i], labels) + t_next * eps[:, i]
        return self.solution(x, times[k - 1], labels)


def build(name: str, config: SoFlowConfig, *, checkpoint: CheckpointRef | str | None = None,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SoFlowSampler:
    """Registry builder for the SoFlow ids (see `adapters.load_sampler`).

    Args:
        name: the model id, for messages and `ModelInfo.name`.
        config: a `SoFlowConfig`.
        checkpoint: a train.py checkpoint ``<step>.pt`` (its ``ema_model`` entry unless the ref
            names another) or a plain state_dict of the ``Soflow`` wrapper or its network;
            None: random weights (adaLN-Zero, so F = 0 and every jump returns its input).
        device, dtype: where and in what precision the network runs.

    Example::

        >>> s = build("soflow-b2", SoFlowConfig(hidden_size=64, depth=2, num_heads=4, input_size=8))
        >>> s.info.nfe, s.info.weights
        (1, 'random-init')
    """
    steps = check_num_steps(name, config.num_steps)
    if config.noising_type not in NOISING_TYPES or config.coefficient_type not in COEFFICIENT_TYPES:
        raise InputError(f"{name}: only noising_type='Linear' with coefficient_type='Euler' is supported (SoFlow's "
                         f"imagenet.yaml; the Trig variants are not implemented), got "
                         f"noising_type={config.noising_type!r}, coefficient_type={config.coefficient_type!r}")
    check_patch_grid(name, config.input_size, config.patch_size)
    check_heads(name, config.hidden_size, config.num_heads)

    def make_net() -> DiT:
        return DiT(input_size=config.input_size, patch_size=config.patch_size, in_channels=config.in_channels,
                   hidden_size=config.hidden_size, depth=config.depth, num_heads=config.num_heads,
                   mlp_ratio=config.mlp_ratio, num_classes=config.num_classes, two_times=True, time_scale=1.0)

    def describe(net: DiT) -> dict:
        return dict(nfe=steps, sequential_steps=steps, num_classes=config.num_classes,
                    **sample_fields("latent", config.in_channels, config.input_size))

    return build_sampler(name, FAMILY, make_net=make_net, describe=describe, checkpoint=checkpoint, device=device,
                         dtype=dtype, layout=Layout(rename=released_key),
                         sampler=lambda info, net: SoFlowSampler(info, net, config, device=torch.device(device),
                                                                 dtype=dtype))
