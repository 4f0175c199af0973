"""Training a TARFlow by maximum likelihood (the mini track's teacher).

The objective is the reference recipe (apple/ml-tarflow `train.py`): add Gaussian noise of
the config's ``noise_std`` to each image (which dequantises it and is what the sampler's
score-based denoising step undoes), and minimise the negative log-likelihood per dimension
under the flow. A fraction of each batch is trained without its labels, through the mean
class embedding that TARFlow's guided sampler uses as its unconditional model.

Example::

    >>> from adapters import load_sampler
    >>> s = load_sampler("tarflow-mini")
    >>> x, y = torch.rand(32, 3, 8, 8) * 2 - 1, torch.randint(0, 10, (32,))
    >>> loss = nll_objective(s.net, x, y, noise_std=s.config.noise_std)
    >>> float(loss(torch.Generator().manual_seed(0), 8)) > 0
    True
"""

from __future__ import annotations

import torch

from adapters.api.training import Objective, Trainable
from adapters.tarflow.network import TARFlow

LABEL_DROP = 0.1  # fraction of a batch trained unconditionally (mean class embedding)


def nll_objective(net: TARFlow, x: torch.Tensor, y: torch.Tensor | None, *, noise_std: float,
                  label_drop: float = LABEL_DROP) -> Objective:
    """``loss(generator, batch)``: mean negative log-likelihood per dimension of noisy training images.

    Args:
        net: the TARFlow network (trainable).
        x: training images (N, C, H, W) in [-1, 1]; y: their labels (N,), or None.
        noise_std: sigma of the Gaussian noise added to each image.
        label_drop: fraction of each batch scored with the mean class embedding instead of its labels.
    """
    dims = x[0].numel()

    def loss(gen: torch.Generator, batch: int) -> torch.Tensor:
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        xb = x[idx]  # (B, C, H, W)
        xb = xb + noise_std * torch.randn(xb.shape, generator=gen)
        yb = None if y is None else y[idx]  # (B,)
        if yb is None or label_drop <= 0:
            return -net.log_prob(xb, yb).mean() / dims
        n_uncond = max(1, round(label_drop * batch)) if batch > 1 else 0
        log_p = [net.log_prob(xb[n_uncond:], yb[n_uncond:])]  # (B - u,)
        if n_uncond:
            log_p.append(net.log_prob(xb[:n_uncond], None))  # (u,)
        return -torch.cat(log_p).mean() / dims

    return loss


def trainable(sampler, images: torch.Tensor, labels: torch.Tensor | None, *, teacher=None, draws: int = 1,
              seed: int = 0) -> Trainable:
    """The track's ``trainer`` hook: the sampler's network, by maximum likelihood at its noise level."""
    sampler.net.requires_grad_(True)
    return Trainable(sampler.net, nll_objective(sampler.net, images, labels, noise_std=sampler.config.noise_std))
