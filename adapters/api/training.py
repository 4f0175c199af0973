"""What a trainable family hands a track: the modules to optimise and their objective.

A family that can be trained by a track (`harness.track`) registers a ``trainer`` hook
(`adapters.api.registry.ModelSpec`): ``trainable(sampler, images, labels, *, teacher, draws,
seed) -> Trainable``. The harness owns the loop (seeding per step, resumable state, progress,
verified checkpoints, `harness.training`); the family owns only its loss.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

Objective = Callable[[torch.Generator, int], torch.Tensor]  # (generator, batch size) -> scalar loss


class Trainable(NamedTuple):
    """The modules a track optimises (the sampler's network, plus any training-only heads) and
    the objective it minimises; the sampler's `net` is what the checkpoint saves."""

    modules: nn.Module
    objective: Objective
