"""The Flax iMF sampler (adapters/imf/jax_port.py) against the torch adapter on the same weights and noise."""

import doctest

import numpy as np
import pytest
import torch

import adapters.imf.jax_port as port

from ..jax_parity import Port, jax_backend_twin, noise_and_labels, relative_deviation

TINY = dict(hidden_size=64, depth=3, num_heads=4, head_depth=1, input_size=8, num_classes=10)
TOL = 1e-4  # relative: max |jax - torch| / max |torch|, float32


@pytest.fixture(scope="module")
def model(make_random_sampler):
    """imf-b2 at a small size, every weight random and non-zero, beside its port."""
    return Port.of(make_random_sampler("imf-b2", seed=1, **TINY), port)


@pytest.mark.parametrize("guidance,interval,steps,use_labels", [
    (0.0, (0.0, 1.0), 1, True),
    (4.0, (0.0, 1.0), 1, True),
    (4.0, (0.3, 0.7), 2, True),
    (0.0, (0.0, 1.0), 2, False),
    (4.0, None, 3, True),  # the config's interval
])
def test_matches_torch(model, guidance, interval, steps, use_labels):
    noise, labels = model.inputs(labels=use_labels)
    ref, out = model.samples(noise, labels, guidance=guidance, guidance_interval=interval, num_steps=steps)
    assert relative_deviation(out, ref) <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5  # the network moved the sample: the check has teeth


def test_the_jax_backend_runs_the_port_with_the_torch_defaults(make_random_sampler, tmp_path):
    s = make_random_sampler("imf-b2", seed=2, **TINY)
    torch.save(s.net.state_dict(), tmp_path / "imf.pt")
    js = jax_backend_twin("imf-b2", tmp_path / "imf.pt", **TINY)
    noise, labels = noise_and_labels((4, 8, 8))
    assert relative_deviation(js.generate(noise, labels), s.generate(noise, labels)) <= TOL  # omega 8 on [0.4, 0.65]


@pytest.mark.slow
def test_full_size_b2_matches_torch(make_random_sampler):
    full = Port.of(make_random_sampler("imf-b2", seed=3), port)
    noise, labels = full.inputs(n=1, seed=4)[0], torch.tensor([207])
    ref, out = full.samples(noise, labels, torch_options={}, guidance=full.sampler.config.guidance)
    assert relative_deviation(out, ref) <= TOL


def test_bfloat16_close_to_float32(model):
    assert model.bfloat16_deviation(*model.inputs(), guidance=4.0, num_steps=2) <= 5e-2


@pytest.mark.parametrize("kwargs", [
    dict(guidance=-1.0),
    dict(guidance=float("nan")),
    dict(guidance=1.0, guidance_interval=(0.8, 0.2)),
    dict(guidance=1.0, guidance_interval=(0.0, 2.0)),
    dict(guidance=1.0, num_steps=0),
])
def test_refuses_what_torch_refuses_with_the_same_message(model, kwargs):
    model.assert_refuses_like_torch(*model.inputs(), **kwargs)


def test_conversion_names_every_bad_tensor(model):
    msg = model.conversion_error(drop=("u_heads.0.mlp.w2.weight",),
                                 put={"shared_blocks.0.extra": torch.zeros(3), "time_tokens": torch.zeros(5, 64)})
    assert "missing tensors: u_heads.0.mlp.w2.weight" in msg
    assert "unexpected tensors: shared_blocks.0.extra" in msg
    assert "mis-shaped tensors: time_tokens (file (5, 64), expected (4, 64))" in msg


def test_docstring_example_runs():
    assert doctest.testmod(port).failed == 0
