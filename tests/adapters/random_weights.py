"""Random non-zero weights for the parity tests: a network at its init is often trivial
(adaLN-Zero gates and zeroed output layers give a zero velocity), and a comparison against a
reference could then not fail on the layers that matter. Test modules import these relatively
(``from ..random_weights import ...``); tests/adapters/conftest.py offers them as fixtures too.
"""

from typing import Callable, TypeVar

import torch
from torch import nn

from adapters import load_sampler

T = TypeVar("T")


def seeded_init(seed: int, build: Callable[..., T], *args, **kwargs) -> T:
    """`build(*args, **kwargs)` with the global torch RNG (that module inits draw from) seeded with
    `seed`, and restored afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build(*args, **kwargs)


def randomize_constant_parameters(module: nn.Module, seed: int) -> None:
    """Give every parameter that its init left constant (adaLN-Zero and zeroed output layers,
    zero biases, unit norm weights) seeded random values around that constant: matrices with
    std 1/sqrt(fan-in), vectors with std 0.1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                std = p[0].numel() ** -0.5 if p.ndim >= 2 else 0.1
                p.add_(std * torch.randn(p.shape, generator=gen).to(p.dtype))


def perturb_trained_parameters(module: nn.Module, seed: int) -> nn.Module:
    """Add seeded noise to every trained parameter (not the fixed sin-cos ``pos_embed``): matrices
    with std 1/sqrt(fan-in), vectors with std 0.1; returns `module`. A time embedder's small
    N(0, 0.02) init would otherwise make the times barely matter, and a mix-up of them could pass unseen."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name != "pos_embed" and not name.endswith(".pos_embed"):
                p.add_((p[0].numel() ** -0.5 if p.ndim >= 2 else 0.1) * torch.randn(p.shape, generator=gen))
    return module


def randomize_all_parameters(module: nn.Module, seed: int) -> None:
    """`randomize_constant_parameters(module, seed)`, then `perturb_trained_parameters(module, seed + 1000)`."""
    randomize_constant_parameters(module, seed)
    perturb_trained_parameters(module, seed + 1000)


def random_sampler(model: str, seed: int = 0, **overrides):
    """`load_sampler(model, **overrides)` with its init drawn from `seed` (the global torch RNG
    is restored afterwards) and every constant parameter of `net` randomised."""
    sampler = seeded_init(seed, load_sampler, model, **overrides)
    randomize_constant_parameters(sampler.net, seed)
    return sampler
