"""Fixtures of the adapter tests: a toy pixel-space family registered for the duration of a test,
and samplers with every constant parameter randomised (for parity tests against references)."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from adapters import load_sampler
from adapters.api import registry
from adapters.base import TorchSampler, count_params
from adapters.api.checkpoint import load_checkpoint
from adapters.api.sampler import RANDOM_INIT, ModelInfo


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

def randomize_constant_parameters(module: nn.Module, seed: int) -> None:
    """Give every parameter that its init left constant (adaLN-Zero and zeroed output layers,
    zero biases, unit norm weights) seeded random values around that constant: matrices with
    std 1/sqrt(fan-in), vectors with std 0.1. Without this a random-init network's outputs
    are trivial (zero velocity) and a parity test could not fail on the layers that matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                std = p[0].numel() ** -0.5 if p.ndim >= 2 else 0.1
                p.add_(std * torch.randn(p.shape, generator=gen).to(p.dtype))


def random_sampler(model: str, seed: int = 0, **overrides):
    """`load_sampler(model, **overrides)` with its init drawn from `seed` (the global torch RNG
    is restored afterwards) and every constant parameter of `net` randomised."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sampler = load_sampler(model, **overrides)
    randomize_constant_parameters(sampler.net, seed)
    return sampler


@pytest.fixture(scope="session")
def make_random_sampler():
    """`random_sampler(model, seed=0, **overrides)`, as a fixture (test modules cannot import conftest)."""
    return random_sampler


@pytest.fixture(scope="session")
def randomize_constants():
    """`randomize_constant_parameters(module, seed)`, as a fixture: for reference modules built outside nfebench."""
    return randomize_constant_parameters
