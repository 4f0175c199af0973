"""The Flax iMF sampler (adapters/imf/jax_port.py) against the torch adapter on the same weights and noise."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import adapters.imf.jax_port as port
from adapters import load_sampler
from adapters.api.errors import InputError

TINY = dict(hidden_size=64, depth=3, num_heads=4, head_depth=1, input_size=8, num_classes=10)
TOL = 1e-4  # relative: max |jax - torch| / max |torch|, float32


@pytest.fixture(scope="module")
def model(make_random_sampler):
    """(torch sampler with every weight random and non-zero, converted params, jitted JAX generate)."""
    s = make_random_sampler("imf-b2", seed=1, **TINY)
    params = port.convert_params(s.net.state_dict(), s.config, "imf-b2")
    generate = jax.jit(port.make_generate(s.config, "imf", name="imf-b2"),
                       static_argnames=("guidance", *port.FAMILY_OPTIONS))
    return s, params, generate


def inputs(n=3, seed=0):
    noise = torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    return noise, torch.tensor([3, 0, 9][:n])


def jax_inputs(noise, labels, dtype=jnp.float32):
    return jnp.asarray(noise.numpy(), dtype), None if labels is None else jnp.asarray(labels.numpy(), jnp.int32)


def _rel(out, ref):
    return float(np.abs(np.asarray(out, np.float32) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("guidance,interval,steps,use_labels", [
    (0.0, (0.0, 1.0), 1, True),
    (4.0, (0.0, 1.0), 1, True),
    (4.0, (0.3, 0.7), 2, True),
    (0.0, (0.0, 1.0), 2, False),
    (4.0, None, 3, True),  # the config's interval
])
def test_matches_torch(model, guidance, interval, steps, use_labels):
    s, params, generate = model
    noise, labels = inputs()
    labels = labels if use_labels else None
    ref = s.generate(noise, labels, guidance=guidance, guidance_interval=interval, num_steps=steps).numpy()
    out = generate(params, *jax_inputs(noise, labels), guidance=guidance, guidance_interval=interval, num_steps=steps)
    assert out.shape == ref.shape and out.dtype == jnp.float32
    assert _rel(out, ref) <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5  # the network moved the sample: the check has teeth


def test_the_jax_backend_runs_the_port_with_the_torch_defaults(make_random_sampler, tmp_path):
    s = make_random_sampler("imf-b2", seed=2, **TINY)
    path = tmp_path / "imf.pt"
    torch.save(s.net.state_dict(), path)
    js = load_sampler("imf-b2", checkpoint=str(path), backend="jax", device="cpu", **TINY)
    # The torch adapter's info, word for word.
    assert js.info == load_sampler(js.info.name, checkpoint=str(path), **TINY).info
    noise, labels = inputs()
    assert _rel(js.generate(noise, labels), s.generate(noise, labels).numpy()) <= TOL  # omega 8 on [0.4, 0.65]


@pytest.mark.slow
def test_full_size_b2_matches_torch(make_random_sampler):
    s = make_random_sampler("imf-b2", seed=3)
    generate = jax.jit(port.make_generate(s.config), static_argnames=("guidance", *port.FAMILY_OPTIONS))
    noise = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([207])
    ref = s.generate(noise, labels).numpy()
    out = generate(port.convert_params(s.net.state_dict(), s.config, "imf-b2"), *jax_inputs(noise, labels),
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
    dict(guidance=-1.0),
    dict(guidance=float("nan")),
    dict(guidance=1.0, guidance_interval=(0.8, 0.2)),
    dict(guidance=1.0, guidance_interval=(0.0, 2.0)),
    dict(guidance=1.0, num_steps=0),
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
    del sd["u_heads.0.mlp.w2.weight"]
    sd["shared_blocks.0.extra"] = torch.zeros(3)
    sd["time_tokens"] = torch.zeros(5, 64)
    with pytest.raises(InputError) as err:
        port.convert_params(sd, s.config, "imf-b2")
    msg = str(err.value)
    assert "missing tensors: u_heads.0.mlp.w2.weight" in msg
    assert "unexpected tensors: shared_blocks.0.extra" in msg
    assert "mis-shaped tensors: time_tokens (file (5, 64), expected (4, 64))" in msg


def test_docstring_example_runs():
    assert doctest.testmod(port).failed == 0
