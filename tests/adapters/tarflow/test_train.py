"""TARFlow's maximum-likelihood objective, against the closed form of an identity flow."""

import torch

from adapters import load_sampler
from adapters.tarflow.train import nll_objective


def test_nll_of_the_initial_identity_flow_is_the_standard_normal_energy():
    # With proj_out zeroed (the reference zeroes its weight at init; the bias too here) every
    # block is the identity, so z = x, log det = 0 and -log p(x) per dimension is
    # mean(x^2) / 2 up to the constant the objective leaves out.
    s = load_sampler("tarflow-mini")
    for block in s.net.blocks:
        torch.nn.init.zeros_(block.proj_out.bias)
    x, y = torch.rand(40, 3, 8, 8) * 2 - 1, torch.randint(0, 10, (40,))
    loss = nll_objective(s.net, x, y, noise_std=0.1, label_drop=0.25)(torch.Generator().manual_seed(3), 16)
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 40, (16,), generator=gen)
    xb = x[idx] + 0.1 * torch.randn(16, 3, 8, 8, generator=gen)
    torch.testing.assert_close(loss, 0.5 * xb.pow(2).mean(), rtol=1e-6, atol=1e-6)


def test_nll_gradient_reaches_every_block_and_the_label_table():
    s = load_sampler("tarflow-mini")
    s.net.requires_grad_(True)
    with torch.no_grad():  # past the zero-initialised output, gradients reach everything upstream
        for block in s.net.blocks:
            block.proj_out.weight.normal_(0, 0.02)
    x, y = torch.rand(40, 3, 8, 8) * 2 - 1, torch.randint(0, 10, (40,))
    nll_objective(s.net, x, y, noise_std=0.1)(torch.Generator().manual_seed(0), 20).backward()
    for block in s.net.blocks:
        assert block.proj_out.weight.grad.abs().sum() > 0
        assert block.class_embed.grad.abs().sum() > 0
