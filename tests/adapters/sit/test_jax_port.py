"""The Flax SiT sampler (adapters/sit/jax_port.py) against the torch adapter on the same weights and noise."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adapters import load_sampler
from adapters.api.checkpoint import CheckpointWarning

from adapters.sit import jax_port
from adapters.api.errors import InputError

TINY = dict(hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10)
TOL = 1e-4  # relative: max |jax - torch| / max |torch|, float32


@pytest.fixture(scope="module")
def port(make_random_sampler):
    """(torch sampler with random non-zero weights, converted params, jitted JAX generate)."""
    s = make_random_sampler("sit-b2", seed=1, **TINY)
    params = jax_port.convert_params(s.net.state_dict(), s.config, "sit-b2")
    generate = jax.jit(jax_port.make_generate(s.config, "sit", name="sit-b2"),
                       static_argnames=("guidance", *jax_port.FAMILY_OPTIONS))
    return s, params, generate


def inputs(n=3, seed=0):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed)), torch.tensor([3, 0, 9][:n])


def jax_inputs(noise, labels, dtype=jnp.float32):
    return jnp.asarray(noise.numpy(), dtype), None if labels is None else jnp.asarray(labels.numpy(), jnp.int32)


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("num_steps", [1, 2])
@pytest.mark.parametrize("guidance,use_labels", [(0.0, True), (1.5, True), (0.0, False)])
def test_matches_torch(port, solver, num_steps, guidance, use_labels):
    s, params, generate = port
    noise, labels = inputs()
    labels = labels if use_labels else None
    ref = s.generate(noise, labels, guidance=guidance, num_steps=num_steps, solver=solver).numpy()
    out = generate(params, *jax_inputs(noise, labels), guidance=guidance, num_steps=num_steps, solver=solver)
    assert out.shape == ref.shape and out.dtype == jnp.float32
    dev = float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max())
    print(f"sit jax {solver} k={num_steps} g={guidance} labels={use_labels}: relative deviation {dev:.2e}")
    assert dev <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5  # the network moved the sample: the check has teeth


def test_defaults_are_the_configs(port):
    s, params, generate = port
    noise, labels = inputs()
    ref = s.generate(noise, labels, guidance=0.0).numpy()  # config: 1 Euler step
    out = np.asarray(generate(params, *jax_inputs(noise, labels), guidance=0.0))
    assert np.abs(out - ref).max() <= TOL * np.abs(ref).max()


def test_bfloat16_close_to_float32(port):
    s, params, generate = port
    noise, labels = inputs()
    ref = np.asarray(generate(params, *jax_inputs(noise, labels), guidance=1.5, num_steps=2, solver="heun"))
    p16 = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
    out = generate(p16, *jax_inputs(noise, labels, jnp.bfloat16), guidance=1.5, num_steps=2, solver="heun")
    assert out.dtype == jnp.bfloat16
    assert np.abs(np.asarray(out, np.float32) - ref).max() <= 5e-2 * np.abs(ref).max()


@pytest.mark.parametrize("guidance,labels,options", [
    (1.0, None, {}),
    (0.0, True, {"num_steps": 0}),
    (0.0, True, {"num_steps": 2.0}),
    (0.0, True, {"solver": "dopri5"}),
    (float("nan"), True, {}),
])
def test_refuses_what_torch_refuses_with_the_same_message(port, guidance, labels, options):
    s, params, generate = port
    noise, lab = inputs()
    lab = lab if labels else None
    with pytest.raises(InputError) as torch_err:
        s.generate(noise, lab, guidance=guidance, **options)
    with pytest.raises(InputError) as jax_err:
        generate(params, *jax_inputs(noise, lab), guidance=guidance, **options)
    assert str(jax_err.value) == str(torch_err.value)


def test_checkpoint_loads_into_the_jax_sampler(port, tmp_path):
    """load_sampler(backend="jax"): the torch adapter's checkpoint reader (learned sigma dropped) feeds the port."""
    s, _, _ = port
    sd = dict(s.net.state_dict())
    w, b = sd["final_layer.linear.weight"], sd["final_layer.linear.bias"]  # (16, 64), (16,): (p, q, c) rows
    sigma_w = torch.randn(4, 4, 64)  # SiT's learned-sigma rows, interleaved after each (p, q) group's 4 channels
    sd["final_layer.linear.weight"] = torch.cat([w.reshape(4, 4, 64), sigma_w], dim=1).reshape(32, 64)
    sd["final_layer.linear.bias"] = torch.cat([b.reshape(4, 4), torch.randn(4, 4)], dim=1).reshape(32)
    path = tmp_path / "sit.pt"
    torch.save(sd, path)
    with pytest.warns(CheckpointWarning, match="dropped the learned-sigma output channels"):
        js = load_sampler("sit-b2", path, backend="jax", device="cpu", **TINY)
        torch_info = load_sampler("sit-b2", path, **TINY).info
    assert js.info == torch_info and js.family_options == jax_port.FAMILY_OPTIONS
    noise, labels = inputs()
    ref = s.generate(noise, labels, guidance=1.5, num_steps=2).numpy()
    out = np.asarray(js.generate(noise, labels, guidance=1.5, num_steps=2))
    assert np.abs(out - ref).max() <= TOL * np.abs(ref).max()


def test_conversion_names_every_bad_tensor(port):
    s, _, _ = port
    sd = dict(s.net.state_dict())
    del sd["blocks.1.attn.proj.bias"]
    sd["h_embedder.mlp.0.bias"] = torch.zeros(64)  # a MeanFlow network's
    with pytest.raises(InputError) as err:
        jax_port.convert_params(sd, s.config, "sit-b2")
    assert "missing tensors: blocks.1.attn.proj.bias" in str(err.value)
    assert "unexpected tensors: h_embedder.mlp.0.bias" in str(err.value)


def test_docstring_examples_run():
    assert doctest.testmod(jax_port).failed == 0
