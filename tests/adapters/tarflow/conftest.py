"""Fixtures of the TARFlow tests: a tiny configuration, tiny TARFlows with every parameter
perturbed, and their inputs (test modules cannot import each other, so they share these)."""

import pytest
import torch

from adapters import load_sampler

# T = (8/2)^2 = 16 tokens of width 3*2*2 = 12; two blocks so both token orders are exercised.
TINY = dict(img_size=8, in_channels=3, patch_size=2, channels=64, num_blocks=2, layers_per_block=2,
            num_classes=10, noise_std=0.05)


def _tiny(dtype=torch.float64, scale=0.05, seed=0, **overrides):
    """A tiny TARFlow whose every parameter is perturbed, so proj_out (zero at init) and
    the class embeddings do real work."""
    with torch.random.fork_rng():  # the initialisation draws from the global generator
        torch.manual_seed(seed)
        s = load_sampler("tarflow", dtype=dtype, **{**TINY, **overrides})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in s.net.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return s


def _noise_and_labels(s, n=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, *s.info.sample_shape, generator=gen, dtype=torch.float64)
    return z, torch.randint(0, s.info.num_classes, (n,), generator=gen)


@pytest.fixture
def tiny_config():
    """The tiny configuration's overrides (a fresh dict per test)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny():
    """`tiny(dtype=float64, scale=0.05, seed=0, **overrides)`: a seeded tiny TARFlow, every parameter perturbed."""
    return _tiny


@pytest.fixture(scope="session")
def noise_and_labels():
    """`noise_and_labels(s, n=3, seed=1)`: seeded float64 noise and labels for sampler `s`."""
    return _noise_and_labels
