"""Rectified Flow on a DiT backbone (SD-VAE latent 4x32x32, patch 2, or pixels), and the DiT itself.

The backbone follows facebookresearch/DiT (adaLN-Zero blocks, fixed 2-D sin-cos
positions, sinusoidal timestep MLP, class table with a null row for guidance) and uses its
parameter names and output token layout, so a DiT/SiT-layout state_dict with
``learn_sigma=False`` loads unchanged. SiT, SoFlow, DMF and the official MeanFlow
(adapters/sit, soflow, dmf, meanflow) build on it: ``two_times`` adds the interval embedder
`h_embedder`, ``time_scale=1`` embeds raw times, ``computed_positions`` keeps the positions
out of the parameters. The sampler here is Rectified Flow's (a velocity network, k-step
Euler, 1 step by default): ``rf-mini``, the mini track's one-step baseline.

Time convention: x_t = (1 - t) * x0 + t * noise, so t = 1 is noise and t = 0 is data; the
instantaneous velocity is v = noise - x0 and the sampler integrates from t = 1 to 0.

The step count is ``num_steps`` (config field and `generate` option), as in every family;
``steps``, its old name here, still works in both places and warns (`take_steps_alias`,
`rename_steps_option`).

Random weights: adaLN-Zero zero-initialises every modulation and the output layer, so an
untrained network predicts exactly zero velocity and the sampler returns its input noise
unchanged. The samples then differ per seed (nothing degenerate for FID's covariance), and
timings are unaffected, but they are not images.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adapters.api.checkpoint import CheckpointRef
from adapters.api.config import option
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, check_guidance, check_space
from adapters.base import (
    TorchSampler,
    check_guided_labels,
    check_heads,
    check_num_steps,
    check_patch_grid,
)
from adapters.builder import build_sampler, sample_fields
from adapters.layers import (
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    TransformerBlock,
    init_linear_xavier,
    modulate,
    zero_adaln,
)

FAMILY = "rectified-flow"


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """DiT's fixed positions (T, dim): first half of channels encodes each token's column,
    second half its row, each as [sin | cos] at frequencies 10000^(-i / (dim/4))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (dim/4,)
    pos = torch.arange(grid, dtype=torch.float64)
    cols, rows = pos.repeat(grid), pos.repeat_interleave(grid)  # (T,) row-major tokens

    def one_axis(p: torch.Tensor) -> torch.Tensor:
        out = p[:, None] * omega[None]  # (T, dim/4)
        return torch.cat([out.sin(), out.cos()], dim=1)  # (T, dim/2)

    return torch.cat([one_axis(cols), one_axis(rows)], dim=1).float()  # (T, dim)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map to p*p*C values per token."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (N, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, T, p*p*C)


def init_dit(net: nn.Module, time_embedders) -> None:
    """DiT's init of `net` (a DiT-shaped network: pos_embed, x/y embedders, blocks, final_layer):
    xavier linears, the fixed sin-cos positions, N(0, 0.02) label and time-MLP weights (each of
    `time_embedders`, None skipped), zero adaLN and output. The draws come in DiT's order, so a
    seeded build gives DiT's weights."""
    init_linear_xavier(net)
    net.pos_embed.data.copy_(sincos_pos_embed_2d(net.pos_embed.shape[-1], net.grid).unsqueeze(0))
    w = net.x_embedder.proj.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear on the flattened patch
    nn.init.zeros_(net.x_embedder.proj.bias)
    nn.init.normal_(net.y_embedder.embedding_table.weight, std=0.02)
    for emb in time_embedders:
        if emb is not None:
            nn.init.normal_(emb.mlp[0].weight, std=0.02)
            nn.init.normal_(emb.mlp[2].weight, std=0.02)
    for block in net.blocks:
        zero_adaln(block)
    for p in (*net.final_layer.adaLN_modulation[-1].parameters(), *net.final_layer.linear.parameters()):
        nn.init.zeros_(p)


@dataclass(frozen=True)
class DiTSize:
    """The size fields of a `DiT` (DiT-B/2 by default), shared by the configs of the families
    built on it; `DiT.from_size` builds the network from them.

    Example::

        >>> DiT.from_size(DiTSize(hidden_size=32, depth=2, num_heads=2, input_size=8, num_classes=10)).grid
        4
    """

    hidden_size: int = option(768, "transformer width")
    depth: int = option(12, "transformer blocks")
    num_heads: int = option(12, "attention heads")
    mlp_ratio: float = option(4.0, "MLP hidden width / width")
    patch_size: int = option(2, "latent patch side")
    input_size: int = option(32, "latent side (image side / 8; the image side in pixel space)")
    in_channels: int = option(4, "latent channels")
    num_classes: int = option(1000, "class count (the null class is extra)")


class DiT(nn.Module):
    """DiT with adaLN-Zero, predicting a C-channel field (no learned sigma).

    Args:
        input_size: latent side (32). patch_size: 2. in_channels: 4.
        hidden_size, depth, num_heads, mlp_ratio: transformer size (DiT-B: 768, 12, 12, 4).
        num_classes: class count; the label table has one more row, the null class.
        two_times: add a second timestep embedder `h_embedder` for MeanFlow's interval
            h = t - r, summed into the conditioning with t's and the class embedding.
        time_scale: times in [0, 1] are multiplied by this before the sinusoid (1000 puts
            them on DiT's timestep range; a SiT-style checkpoint trained on raw t uses 1).
        computed_positions: keep the sin-cos positions in a non-persistent buffer, out of the
            state_dict and the parameter count (the official MeanFlow module computes them in
            its forward); False (default): DiT's frozen Parameter `pos_embed`, which DiT and
            SiT state_dicts carry.

    Example::

        >>> net = DiT(input_size=8, hidden_size=32, depth=2, num_heads=2, num_classes=10)
        >>> net(torch.randn(3, 4, 8, 8), torch.rand(3), torch.tensor([0, 1, 2])).shape
        torch.Size([3, 4, 8, 8])
    """

    def __init__(self, *, input_size: int = 32, patch_size: int = 2, in_channels: int = 4,
                 hidden_size: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 num_classes: int = 1000, two_times: bool = False, time_scale: float = 1000.0,
                 computed_positions: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.grid = input_size // patch_size
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size, scale=time_scale)
        self.h_embedder = TimestepEmbedder(hidden_size, scale=time_scale) if two_times else None
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        positions = torch.zeros(1, self.grid ** 2, hidden_size)  # filled by initialize_weights
        if computed_positions:
            self.register_buffer("pos_embed", positions, persistent=False)
        else:  # fixed, as in DiT: a Parameter with requires_grad=False so DiT state_dicts carry it
            self.pos_embed = nn.Parameter(positions, requires_grad=False)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.blocks = nn.ModuleList(TransformerBlock(hidden_size, num_heads, mlp_hidden, adaln=True)
                                    for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's init (`init_dit`)."""
        init_dit(self, (self.t_embedder, self.h_embedder))

    @classmethod
    def from_size(cls, size: DiTSize, *, two_times: bool = False, time_scale: float = 1000.0,
                  computed_positions: bool = False) -> DiT:
        """The DiT of a config's size fields (`DiTSize` or a config derived from it)."""
        return cls(input_size=size.input_size, patch_size=size.patch_size, in_channels=size.in_channels,
                   hidden_size=size.hidden_size, depth=size.depth, num_heads=size.num_heads,
                   mlp_ratio=size.mlp_ratio, num_classes=size.num_classes, two_times=two_times,
                   time_scale=time_scale, computed_positions=computed_positions)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p*p*C) in DiT's (row, col, p, q, c) token layout -> (N, C, H, W)."""
        n, p, c, g = x.shape[0], self.patch_size, self.in_channels, self.grid
        x = x.reshape(n, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                h: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W), t (N,) in [0, 1], y (N,) labels or None (null class), h (N,) the
        MeanFlow interval t - r (required iff built with two_times) -> (N, C, H, W)."""
        x = self.x_embedder(x) + self.pos_embed.to(x.dtype)  # (N, T, D)
        c = self.t_embedder(t) + self.y_embedder(y, x.shape[0])  # (N, D)
        if self.h_embedder is not None:
            c = c + self.h_embedder(h)
        for block in self.blocks:
            x = block(x, c)  # (N, T, D)
        return self.unpatchify(self.final_layer(x, c))  # (N, C, H, W)

    def flops(self) -> int:
        """Matmul FLOPs of one forward per sample, multiply-add = 2 (what `FlopCounterMode` counts)."""
        tokens, d = self.grid ** 2, self.pos_embed.shape[-1]
        patch = self.patch_size ** 2 * self.in_channels
        total = self.x_embedder.flops(tokens)
        total += sum(e.flops() for e in (self.t_embedder, self.h_embedder) if e is not None)
        total += sum(b.flops(tokens) for b in self.blocks)
        total += 2 * d * 2 * d + 2 * tokens * d * patch  # final adaLN and linear
        return total


def take_steps_alias(config: Any) -> None:
    """The ``__post_init__`` of a frozen config with ``num_steps`` and the deprecated ``steps``
    field: a ``steps`` given moves to ``num_steps`` (and ``steps`` back to None, so
    `dataclasses.replace` keeps working), with a DeprecationWarning naming ``num_steps``."""
    if config.steps is None:
        return
    warnings.warn(f"the config option steps is deprecated: use num_steps (steps={config.steps!r} sets "
                  f"num_steps={config.steps!r})", DeprecationWarning, stacklevel=4)
    object.__setattr__(config, "num_steps", config.steps)
    object.__setattr__(config, "steps", None)


def rename_steps_option(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """`generate`'s options with the deprecated ``steps`` renamed ``num_steps``, with a
    DeprecationWarning; both given is an InputError.

    Example::

        >>> import warnings; warnings.simplefilter("ignore")
        >>> rename_steps_option("rf-mini", {"steps": 2})
        {'num_steps': 2}
    """
    if "steps" not in options:
        return options
    if "num_steps" in options:
        raise InputError(f"{name}: steps is the deprecated name of num_steps; give num_steps only")
    warnings.warn(f"{name}: the option steps is deprecated: use num_steps", DeprecationWarning, stacklevel=3)
    out = dict(options)
    out["num_steps"] = out.pop("steps")
    return out


@dataclass(frozen=True)
class FlowMatchConfig(DiTSize):
    """Defaults of one Rectified Flow id; every field can be overridden in `load_sampler`."""

    num_steps: int = option(1, "default Euler steps from t = 1 (noise) to 0 (data)")
    guidance: float = option(0.0, "default guidance g (0 = none); DiT's cfg scale is 1 + g")
    time_scale: float = option(1000.0, "multiplier on t before the sinusoidal embedding")
    space: str = option("latent", "latent (SD-VAE, decoded at 8x) or pixel (decode is the identity)")
    vae: str | None = option(None, "SD-VAE folder or hub id (see adapters.vae)")
    steps: int | None = option(None, "deprecated name of num_steps: sets it, with a DeprecationWarning")

    def __post_init__(self):
        take_steps_alias(self)


class RectifiedFlowSampler(TorchSampler):
    """k-step Euler on the velocity field, on the time grid 1 = t_0 > t_1 > ... > t_k = 0,
    with classifier-free guidance.

    Guidance g (the harness convention: 0 means none) combines the conditional and
    unconditional (null-class) velocities as

        v = v_c + g * (v_c - v_u)        (DiT's cfg_scale w is 1 + g)

    The two are computed in one doubled batch, so each step costs 2 network evaluations
    per image when g != 0 and 1 when g == 0. Labels None samples unconditionally (null
    class), where guidance has no meaning and a non-zero g is refused.
    """

    def __init__(self, info: ModelInfo, net: DiT, config: FlowMatchConfig, *, device: torch.device,
                 dtype: torch.dtype):
        super().__init__(info, net, device=device, dtype=dtype, vae=config.vae)
        self.config = config

    def generate(self, noise: torch.Tensor, labels: torch.Tensor | None, *, guidance: float | None = None,
                 **options: Any) -> torch.Tensor:
        """`TorchSampler.generate`, also taking the deprecated ``steps`` for ``num_steps``."""
        return super().generate(noise, labels, guidance=guidance, **rename_steps_option(self.info.name, options))

    def _time(self, value: float, n: int) -> torch.Tensor:
        return torch.full((n,), value, device=self.device, dtype=torch.float32)  # (N,)

    def velocity(self, x: torch.Tensor, t: float, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """The (guided) velocity at x (N, C, H, W) and time t."""
        n = x.shape[0]
        if guidance == 0.0 or labels is None:
            return self.net(x, self._time(t, n), labels)
        null = torch.full_like(labels, self.net.y_embedder.num_classes)
        v = self.net(torch.cat([x, x]), self._time(t, 2 * n), torch.cat([labels, null]))  # (2N, C, H, W)
        v_c, v_u = v.chunk(2)
        return v_c + guidance * (v_c - v_u)

    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None, *,
                  num_steps: int | None = None) -> torch.Tensor:
        """Euler from t = 1 to 0: x <- x + (t_next - t) * v(x, t), `num_steps` (default config.num_steps) times."""
        g = check_guidance(self.info.name, self.config.guidance if guidance is None else guidance)
        check_guided_labels(self.info.name, g, labels)
        k = check_num_steps(self.info.name, self.config.num_steps if num_steps is None else num_steps)
        times = torch.linspace(1.0, 0.0, k + 1, dtype=torch.float64).tolist()
        x = noise
        for t, t_next in zip(times[:-1], times[1:]):
            x = x + (t_next - t) * self.velocity(x, t, labels, g)
        return x


def build_rectified_flow(name: str, config: FlowMatchConfig, *, checkpoint: CheckpointRef | str | None = None,
                         device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float32) -> RectifiedFlowSampler:
    """Registry builder for the Rectified Flow ids (see `adapters.load_sampler`).

    Example::

        >>> s = build_rectified_flow("rf-mini", FlowMatchConfig(hidden_size=64, depth=2, num_heads=2, input_size=8))
        >>> s.info.family, s.info.nfe, s.info.sample_shape
        ('rectified-flow', 1, (4, 8, 8))
    """
    steps = check_num_steps(name, config.num_steps)
    guidance = check_guidance(name, config.guidance)
    check_patch_grid(name, config.input_size, config.patch_size)
    check_heads(name, config.hidden_size, config.num_heads)
    check_space(name, config.space)

    def make_net() -> DiT:
        return DiT.from_size(config, time_scale=config.time_scale)

    def describe(net: DiT) -> dict:
        # NFE at the defaults: guidance doubles each step.
        return dict(nfe=steps * (1 if guidance == 0.0 else 2), sequential_steps=steps, num_classes=config.num_classes,
                    **sample_fields(config.space, config.in_channels, config.input_size))

    return build_sampler(name, FAMILY, make_net=make_net, describe=describe, checkpoint=checkpoint, device=device,
                         dtype=dtype, sampler=lambda info, net: RectifiedFlowSampler(
                             info, net, config, device=torch.device(device), dtype=dtype))
