"""A toy pixel-space family registered for the duration of a test."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from adapters import registry
from adapters.base import TorchSampler, count_params
from adapters.checkpoint import load_checkpoint
from harness.sampler import RANDOM_INIT, ModelInfo


@dataclass(frozen=True)
class ToyConfig:
    size: int = 8
    width: int = 4
    num_classes: int = 10


class ToySampler(TorchSampler):
    def _generate(self, noise, labels, guidance, *, scale=1.0):
        return self.net(noise) * scale  # (N, 3, H, W)


def build_toy(name, config, *, checkpoint, device, dtype):
    with torch.device(device):
        net = nn.Conv2d(3, 3, 1).to(dtype)
    weights = load_checkpoint(net, checkpoint) if checkpoint else RANDOM_INIT
    info = ModelInfo(name=name, family="toy", params=count_params(net), nfe=1, sequential_steps=1,
                     space="pixel", sample_shape=(3, config.size, config.size), image_size=config.size,
                     num_classes=config.num_classes, gflops=0.0, weights=weights)
    return ToySampler(info, net, device=device, dtype=dtype)


@pytest.fixture
def toy_family(monkeypatch):
    registry._ensure_loaded()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("toy-s", family="toy", config=ToyConfig(), build=build_toy)
    return "toy-s"
