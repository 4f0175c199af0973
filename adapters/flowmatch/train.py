"""Training a Rectified Flow velocity network (the mini track's one-step baseline).

Flow matching with the straight path of `adapters.flowmatch.model`'s convention:
x_t = (1 - t) x0 + t * noise, t ~ U(0, 1), target velocity v = noise - x0, mean squared
error. A fraction of labels is replaced by the null class, so classifier-free guidance
has an unconditional model to contrast with.

Example::

    >>> from adapters import load_sampler
    >>> s = load_sampler("rf-mini")
    >>> x, y = torch.rand(32, 3, 8, 8) * 2 - 1, torch.randint(0, 10, (32,))
    >>> float(velocity_objective(s.net, x, y)(torch.Generator().manual_seed(0), 8)) > 0
    True
"""

from __future__ import annotations

import torch

from adapters.api.training import Objective, Trainable
from adapters.flowmatch.model import DiT

LABEL_DROP = 0.1  # fraction of labels replaced by the null class


def velocity_objective(net: DiT, x: torch.Tensor, y: torch.Tensor, *, label_drop: float = LABEL_DROP) -> Objective:
    """``loss(generator, batch)``: flow-matching MSE on images x (N, C, H, W) in [-1, 1] with labels y (N,)."""
    null = net.y_embedder.num_classes

    def loss(gen: torch.Generator, batch: int) -> torch.Tensor:
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        x0 = x[idx]  # (B, C, H, W)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.rand(batch, generator=gen)  # (B,)
        labels = torch.where(torch.rand(batch, generator=gen) < label_drop, null, y[idx])
        tt = t.view(-1, 1, 1, 1)
        xt = (1 - tt) * x0 + tt * noise
        return (net(xt, t, labels) - (noise - x0)).pow(2).mean()

    return loss


def trainable(sampler, images: torch.Tensor, labels: torch.Tensor | None, *, teacher=None, draws: int = 1,
              seed: int = 0) -> Trainable:
    """The track's ``trainer`` hook: the sampler's DiT, by flow matching."""
    return Trainable(sampler.net, velocity_objective(sampler.net, images, labels))
