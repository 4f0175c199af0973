"""Rectified Flow's flow-matching objective, against the closed form of a zero velocity net."""

import torch

from adapters import load_sampler
from adapters.flowmatch.train import velocity_objective


def test_loss_of_the_initial_zero_velocity_net_is_the_target_energy():
    # adaLN-Zero zeroes the output layer, so the untrained net predicts v = 0 and the loss is
    # mean((noise - x0)^2) over the same draws.
    s = load_sampler("rf-mini")
    x, y = torch.rand(30, 3, 8, 8) * 2 - 1, torch.randint(0, 10, (30,))
    loss = velocity_objective(s.net, x, y)(torch.Generator().manual_seed(5), 12)
    gen = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 30, (12,), generator=gen)
    noise = torch.randn(12, 3, 8, 8, generator=gen)
    torch.testing.assert_close(loss, (noise - x[idx]).pow(2).mean(), rtol=1e-6, atol=1e-6)


def test_labels_are_dropped_to_the_null_class_at_the_given_rate():
    s = load_sampler("rf-mini")
    seen = []
    s.net.forward = lambda xt, t, labels: seen.append(labels) or torch.zeros_like(xt)
    x, y = torch.zeros(10, 3, 8, 8), torch.zeros(10, dtype=torch.long)
    velocity_objective(s.net, x, y, label_drop=0.5)(torch.Generator().manual_seed(0), 4000)
    null_fraction = (seen[0] == s.net.y_embedder.num_classes).float().mean()
    assert abs(null_fraction - 0.5) < 0.03  # 4000 Bernoulli(0.5) draws: 4 standard deviations is 0.032
