"""tinyconv: a one-pass class-conditional convolutional generator, as an nfebench plug-in.

Everything a family needs: a config (fields with help), a network with its FLOP count, a
sampler (`TorchSampler` does input checks, devices, no-grad and the non-finite check), a
builder (`build_sampler` does devices, checkpoints, `ModelInfo`), and a size table registered
with `register_sizes`. The `nfebench.adapters` entry point in pyproject.toml imports this
module, which registers the ids.

Example::

    >>> from adapters import load_sampler
    >>> s = load_sampler("tinyconv-s")
    >>> s.generate(torch.randn(2, 3, 8, 8), torch.tensor([0, 1])).shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.api.config import option
from adapters.api.registry import Size, register_sizes
from adapters.base import TorchSampler
from adapters.builder import build_sampler

FAMILY = "tinyconv"


@dataclass(frozen=True)
class TinyConvConfig:
    width: int = option(32, "hidden channels")
    depth: int = option(2, "hidden 3x3 convolutions")
    image_size: int = option(8, "image side in pixels")
    num_classes: int = option(10, "class count")


class TinyConvNet(nn.Module):
    """Noise (N, 3, H, W) and labels (N,) -> image (N, 3, H, W) in [-1, 1], in one pass."""

    def __init__(self, config: TinyConvConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.num_classes, config.width)
        self.inp = nn.Conv2d(3, config.width, 3, padding=1)
        self.hidden = nn.ModuleList(nn.Conv2d(config.width, config.width, 3, padding=1) for _ in range(config.depth))
        self.out = nn.Conv2d(config.width, 3, 3, padding=1)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.inp(noise) + self.embed(labels)[:, :, None, None]  # (N, W, H, W)
        for conv in self.hidden:
            h = h + torch.relu(conv(h))
        return torch.tanh(self.out(h))  # (N, 3, H, W)

    def flops(self) -> int:
        """FLOPs of one image (multiply-add = 2): every 3x3 convolution at every pixel."""
        c, pixels = self.config.width, self.config.image_size ** 2
        return 2 * 9 * pixels * (3 * c + self.config.depth * c * c + c * 3)


class TinyConvSampler(TorchSampler):
    def _generate(self, noise: torch.Tensor, labels: torch.Tensor | None, guidance: float | None) -> torch.Tensor:
        return self.net(noise, labels)


def build(name: str, config: TinyConvConfig, *, checkpoint=None, device="cpu", dtype=torch.float32):
    """The registry's builder: one network evaluation per image, in pixel space."""
    def describe(net: TinyConvNet) -> dict:
        return dict(nfe=1, sequential_steps=1, space="pixel", sample_shape=(3, config.image_size, config.image_size),
                    image_size=config.image_size, num_classes=config.num_classes)

    return build_sampler(name, FAMILY, make_net=lambda: TinyConvNet(config), describe=describe,
                         sampler=lambda info, net: TinyConvSampler(info, net, device=device, dtype=dtype),
                         checkpoint=checkpoint, device=device, dtype=dtype)


SIZES = {
    "tinyconv-s": Size(TinyConvConfig(), "example plug-in: one-pass conv generator, 8x8 RGB, width 32"),
    "tinyconv-m": Size(TinyConvConfig(width=64, depth=4), "example plug-in: one-pass conv generator, width 64"),
}
register_sizes(SIZES, family=FAMILY, build=build)
