"""Helpers shared by the JAX parity tests."""

import pytest
import torch
from torch import nn

from adapters import load_sampler


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
