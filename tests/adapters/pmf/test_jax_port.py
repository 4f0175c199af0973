"""The Flax pMF sampler (adapters/pmf/jax_port.py) against the torch adapter on the same weights and noise."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import adapters.pmf.jax_port as port
from adapters import load_sampler
from adapters.api.errors import InputError

TINY = dict(hidden_size=64, depth=3, num_heads=4, head_depth=1, input_size=16, patch_size=4, num_classes=10)
TOL = 1e-4  # relative: max |jax - torch| / max |torch|, float32


@pytest.fixture(scope="module")
def model(make_random_sampler):
    """pmf-l32 (noise scale 4) at a small size: (torch sampler with random non-zero weights, params, generate)."""
    s = make_random_sampler("pmf-l32", seed=1, **TINY)
    params = port.convert_params(s.net.state_dict(), s.config, "pmf-l32")
    generate = jax.jit(port.make_generate(s.config, "pmf", name="pmf-l32"),
                       static_argnames=("guidance", *port.FAMILY_OPTIONS))
    return s, params, generate


def inputs(n=3, seed=0):
    noise = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    return noise, torch.tensor([3, 0, 9][:n])


def jax_inputs(noise, labels, dtype=jnp.float32):
    return jnp.asarray(noise.numpy(), dtype), None if labels is None else jnp.asarray(labels.numpy(), jnp.int32)


def _rel(out, ref):
    return float(np.abs(np.asarray(out, np.float32) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("guidance,interval,steps,use_labels", [
    (0.0, (0.0, 1.0), 1, True),
    (4.0, (0.3, 0.7), 1, True),
    (4.0, (0.0, 1.0), 2, True),
    (0.0, (0.0, 1.0), 2, False),
    (6.5, None, 3, True),
])
def test_matches_torch(model, guidance, interval, steps, use_labels):
    s, params, generate = model
    noise, labels = inputs()
    labels = labels if use_labels else None
    ref = s.generate(noise, labels, guidance=guidance, guidance_interval=interval, num_steps=steps).numpy()
    out = generate(params, *jax_inputs(noise, labels), guidance=guidance, guidance_interval=interval, num_steps=steps)
    assert out.shape == ref.shape and out.dtype == jnp.float32
    assert _rel(out, ref) <= TOL
    assert np.abs(ref - 4 * noise.numpy()).max() > 0.5  # the network moved the scaled noise


def test_the_jax_backend_runs_the_port_with_the_torch_defaults(make_random_sampler, tmp_path):
    s = make_random_sampler("pmf-b16", seed=2, **TINY)
    path = tmp_path / "pmf.pt"
    torch.save(s.net.state_dict(), path)
    js = load_sampler("pmf-b16", checkpoint=str(path), backend="jax", device="cpu", **TINY)
    # The torch adapter's info, word for word.
    assert js.info == load_sampler(js.info.name, checkpoint=str(path), **TINY).info
    noise, labels = inputs()
    x = js.generate(noise, labels)
    assert _rel(x, s.generate(noise, labels).numpy()) <= TOL
    np.testing.assert_array_equal(np.asarray(js.decode(x)), np.clip(np.asarray(x), -1, 1))


def test_full_width_h16_matches_torch(make_random_sampler):
    # pMF-H/16's width and 256 px input (bottleneck 256, SwiGLU 3416, noise x2) at depth 2.
    s = make_random_sampler("pmf-h16", seed=3, depth=2, head_depth=1)
    generate = jax.jit(port.make_generate(s.config), static_argnames=("guidance", *port.FAMILY_OPTIONS))
    noise = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([207])
    ref = s.generate(noise, labels).numpy()
    out = generate(port.convert_params(s.net.state_dict(), s.config, "pmf-h16"), *jax_inputs(noise, labels),
                   guidance=s.config.guidance)
    assert _rel(out, ref) <= TOL


def test_bfloat16_close_to_float32(model):
    s, params, generate = model
    noise, labels = inputs()
    ref = np.asarray(generate(params, *jax_inputs(noise, labels), guidance=4.0, num_steps=2))
    p16 = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
    out = generate(p16, *jax_inputs(noise, labels, jnp.bfloat16), guidance=4.0, num_steps=2)
    assert out.dtype == jnp.bfloat16
    assert _rel(out, ref) <= 5e-2


@pytest.mark.parametrize("kwargs", [
    dict(guidance=-0.5),
    dict(guidance=1.0, guidance_interval=(0.5, 0.4)),
    dict(guidance=1.0, guidance_interval=(0.5,)),
    dict(guidance=1.0, num_steps=2.5),
])
def test_refuses_what_torch_refuses_with_the_same_message(model, kwargs):
    s, params, generate = model
    noise, labels = inputs()
    with pytest.raises(InputError) as torch_err:
        s.generate(noise, labels, **kwargs)
    with pytest.raises(InputError) as jax_err:
        generate(params, *jax_inputs(noise, labels), **kwargs)
    assert str(jax_err.value) == str(torch_err.value)


def test_conversion_names_every_bad_tensor(model):
    s, _, _ = model
    sd = dict(s.net.state_dict())
    del sd["pos_embed"]
    sd["v_final_layer.linear.bias"] = torch.zeros(48)  # the torch loader drops it by name; the port gets net's
    sd["x_embedder.proj1.weight"] = torch.zeros(128, 3, 2, 2)
    with pytest.raises(InputError) as err:
        port.convert_params(sd, s.config, "pmf-l32")
    msg = str(err.value)
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
