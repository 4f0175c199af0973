"""Noise and labels for sample i come from (seed, i) alone.

So a run's images do not depend on batch size, device count, sharding or resumption:
sample 17 of seed 0 is the same tensor whether it was drawn in a batch of 1 on one CPU
or in a batch of 256 on rank 3 of 8.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

_NOISE, _LABELS = 0, 1  # independent streams per (seed, index)
RANDOM_INIT_SEED = 0  # the seed random weights are drawn with (see seeded_init)


def _stream_seed(seed: int, index: int, stream: int) -> int:
    """A 63-bit torch seed from (seed, index, stream), well mixed by numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed), int(index), stream]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_noise(seed: int, indices: Sequence[int] | range, shape: Sequence[int],
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise (len(indices), *shape) on the CPU, row k from (seed, indices[k])."""
    out = torch.empty(len(indices), *shape, dtype=torch.float32)
    g = torch.Generator()
    for row, i in enumerate(indices):
        g.manual_seed(_stream_seed(seed, i, _NOISE))
        torch.randn(tuple(shape), generator=g, out=out[row])
    return out.to(dtype)


def sample_labels(seed: int, indices: Sequence[int] | range, num_classes: int) -> torch.Tensor | None:
    """Class labels balanced over classes: each block of `num_classes` consecutive indices
    holds every class once, in an order drawn from (seed, block). None if unconditional."""
    if num_classes <= 0:
        return None
    perms: dict[int, torch.Tensor] = {}
    out = torch.empty(len(indices), dtype=torch.long)
    g = torch.Generator()
    for row, i in enumerate(indices):
        block = i // num_classes
        if block not in perms:
            g.manual_seed(_stream_seed(seed, block, _LABELS))
            perms[block] = torch.randperm(num_classes, generator=g)
        out[row] = perms[block][i % num_classes]
    return out


@contextmanager
def seeded_init(device: torch.device) -> Iterator[None]:
    """Run a build under a fixed seed, leaving the caller's random state untouched: random
    weights ("random-init") are then the same tensors in every process on a device type,
    so numbers measured on them are reproducible and can be held to a baseline."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(RANDOM_INIT_SEED)
        yield
