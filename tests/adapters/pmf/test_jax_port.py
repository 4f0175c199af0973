"""The Flax pMF sampler (adapters/pmf/jax_port.py) against the torch adapter on the same weights and noise."""

import doctest

import numpy as np
import pytest
import torch

import adapters.pmf.jax_port as port
from adapters import load_sampler
from adapters.api.errors import InputError

from ..jax_parity import Port, jax_backend_twin, noise_and_labels, relative_deviation

TINY = dict(hidden_size=64, depth=3, num_heads=4, head_depth=1, input_size=16, patch_size=4, num_classes=10)
TOL = 1e-4  # relative: max |jax - torch| / max |torch|, float32


@pytest.fixture(scope="module")
def model(make_random_sampler):
    """pmf-l32 (noise scale 4) at a small size, with random non-zero weights, beside its port."""
    return Port.of(make_random_sampler("pmf-l32", seed=1, **TINY), port)


@pytest.mark.parametrize("guidance,interval,steps,use_labels", [
    (0.0, (0.0, 1.0), 1, True),
    (4.0, (0.3, 0.7), 1, True),
    (4.0, (0.0, 1.0), 2, True),
    (0.0, (0.0, 1.0), 2, False),
    (6.5, None, 3, True),
])
def test_matches_torch(model, guidance, interval, steps, use_labels):
    noise, labels = model.inputs(labels=use_labels)
    ref, out = model.samples(noise, labels, guidance=guidance, guidance_interval=interval, num_steps=steps)
    assert relative_deviation(out, ref) <= TOL
    assert np.abs(ref - 4 * noise.numpy()).max() > 0.5  # the network moved the scaled noise


def test_the_jax_backend_runs_the_port_with_the_torch_defaults(make_random_sampler, tmp_path):
    s = make_random_sampler("pmf-b16", seed=2, **TINY)
    torch.save(s.net.state_dict(), tmp_path / "pmf.pt")
    js = jax_backend_twin("pmf-b16", tmp_path / "pmf.pt", **TINY)
    noise, labels = noise_and_labels((3, 16, 16))
    x = js.generate(noise, labels)
    assert relative_deviation(x, s.generate(noise, labels)) <= TOL
    np.testing.assert_array_equal(np.asarray(js.decode(x)), np.clip(np.asarray(x), -1, 1))


def test_full_width_h16_matches_torch(make_random_sampler):
    # pMF-H/16's width and 256 px input (bottleneck 256, SwiGLU 3416, noise x2) at depth 2.
    full = Port.of(make_random_sampler("pmf-h16", seed=3, depth=2, head_depth=1), port)
    noise, labels = full.inputs(n=1, seed=4)[0], torch.tensor([207])
    ref, out = full.samples(noise, labels, torch_options={}, guidance=full.sampler.config.guidance)
    assert relative_deviation(out, ref) <= TOL


def test_bfloat16_close_to_float32(model):
    assert model.bfloat16_deviation(*model.inputs(), guidance=4.0, num_steps=2) <= 5e-2


@pytest.mark.parametrize("kwargs", [
    dict(guidance=-0.5),
    dict(guidance=1.0, guidance_interval=(0.5, 0.4)),
    dict(guidance=1.0, guidance_interval=(0.5,)),
    dict(guidance=1.0, num_steps=2.5),
])
def test_refuses_what_torch_refuses_with_the_same_message(model, kwargs):
    model.assert_refuses_like_torch(*model.inputs(), **kwargs)


def test_conversion_names_every_bad_tensor(model):
    msg = model.conversion_error(drop=("pos_embed",), put={
        "v_final_layer.linear.bias": torch.zeros(48),  # the torch loader drops it by name; the port gets net's
        "x_embedder.proj1.weight": torch.zeros(128, 3, 2, 2)})
    assert "missing tensors: pos_embed" in msg
    assert "unexpected tensors: v_final_layer.linear.bias" in msg
    assert "mis-shaped tensors: x_embedder.proj1.weight (file (128, 3, 2, 2), expected (128, 3, 4, 4))" in msg


def test_imf_params_are_refused():
    imf = load_sampler("imf-b2", hidden_size=64, depth=3, num_heads=4, head_depth=1, input_size=16, patch_size=4,
                       in_channels=3, num_classes=10)
    with pytest.raises(InputError, match="missing tensors: pos_embed"):
        port.convert_params(imf.net.state_dict(), load_sampler("pmf-b16", **TINY).config, "pmf-b16")


def test_docstring_example_runs():
    assert doctest.testmod(port).failed == 0
