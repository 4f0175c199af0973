"""Fixtures of the adapter tests: a toy pixel-space family registered for the duration of a test,
and the random weights of random_weights.py as fixtures (for parity tests against references)."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from adapters.api import registry
from adapters.api.checkpoint import load_checkpoint
from adapters.api.sampler import RANDOM_INIT, ModelInfo
from adapters.base import TorchSampler, count_params

from .random_weights import (
    random_sampler,
    randomize_all_parameters,
    randomize_constant_parameters,
)


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


@pytest.fixture(scope="session")
def make_random_sampler():
    """`random_weights.random_sampler(model, seed=0, **overrides)`, as a fixture."""
    return random_sampler


@pytest.fixture(scope="session")
def randomize_constants():
    """`random_weights.randomize_constant_parameters(module, seed)`, as a fixture: for reference modules
    built outside nfebench."""
    return randomize_constant_parameters


@pytest.fixture(scope="session")
def randomize():
    """`random_weights.randomize_all_parameters(module, seed)`, as a fixture: constant parameters
    randomised (adaLN-Zero, zero output layer, unit norms), then every trained one perturbed."""
    return randomize_all_parameters
