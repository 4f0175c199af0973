"""The Flax Rectified Flow sampler (adapters/flowmatch/jax_port.py) against the torch adapter on the same weights
and noise."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adapters.api.errors import InputError
from adapters.flowmatch import jax_port as dit

TINY = dict(hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10, in_channels=4, space="latent")
# DiT-B/2 on the 4x32x32 latent, the size of the retired rf-b2 (and of sit-b2)
RF_B2 = dict(hidden_size=768, depth=12, num_heads=12, input_size=32, in_channels=4, num_classes=1000, space="latent")
TOL = 1e-4  # max abs difference, float32, outputs of scale ~1-5


@pytest.fixture(scope="module")
def models(make_random_sampler):
    """model -> (torch sampler with random weights, converted params, jitted JAX generate)."""
    s = make_random_sampler("rf-mini", seed=1, **TINY)
    params = dit.convert_params(s.net.state_dict(), s.config, "rf-mini")
    generate = jax.jit(dit.make_generate(s.config, "rectified-flow", name="rf-mini"),
                       static_argnames=("guidance", *dit.FAMILY_OPTIONS))
    return {"rf-mini": (s, params, generate)}


def inputs(n=3, size=8, seed=0):
    noise = torch.randn(n, 4, size, size, generator=torch.Generator().manual_seed(seed))
    return noise, torch.tensor([3, 0, 9][:n])


def jax_inputs(noise, labels, dtype=jnp.float32):
    return jnp.asarray(noise.numpy(), dtype), None if labels is None else jnp.asarray(labels.numpy(), jnp.int32)


@pytest.mark.parametrize("model,guidance,steps,use_labels", [
    ("rf-mini", 0.0, 1, True),
    ("rf-mini", 0.0, 2, False),
    ("rf-mini", 1.5, 1, True),
    ("rf-mini", 1.5, 2, True),
    ("rf-mini", 0.0, None, True),  # config.num_steps
])
def test_matches_torch(models, model, guidance, steps, use_labels):
    s, params, generate = models[model]
    noise, labels = inputs()
    labels = labels if use_labels else None
    opts = {} if steps is None else {"num_steps": steps}
    ref = s.generate(noise, labels, guidance=guidance, **opts).numpy()
    out = generate(params, *jax_inputs(noise, labels), guidance=guidance, **opts)
    assert out.shape == ref.shape and out.dtype == jnp.float32
    assert np.abs(np.asarray(out) - ref).max() <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5  # the network moved the sample: the check has teeth


def test_guidance_changes_the_rf_sample(models):
    s, params, generate = models["rf-mini"]
    x = jax_inputs(*inputs())
    diff = generate(params, *x, guidance=1.5, num_steps=1) - generate(params, *x, guidance=0.0, num_steps=1)
    assert float(jnp.abs(diff).max()) > 0.1


def test_bfloat16_close_to_float32(models):
    s, params, generate = models["rf-mini"]  # guided and two steps: every DiT path but the h embedder
    noise, labels = inputs()
    ref = np.asarray(generate(params, *jax_inputs(noise, labels), guidance=1.5, num_steps=2))
    p16 = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
    out = generate(p16, *jax_inputs(noise, labels, jnp.bfloat16), guidance=1.5, num_steps=2)
    assert out.dtype == jnp.bfloat16
    assert np.abs(np.asarray(out, np.float32) - ref).max() <= 5e-2 * np.abs(ref).max()


@pytest.mark.slow
def test_full_size_rf_at_b2_matches_torch(make_random_sampler):
    s = make_random_sampler("rf-mini", seed=2, **RF_B2)
    params = dit.convert_params(s.net.state_dict(), s.config, "rf-mini")
    noise, labels = inputs(n=1, size=32)
    ref = s.generate(noise, labels, guidance=0.0).numpy()
    generate = jax.jit(dit.make_generate(s.config, "rectified-flow"), static_argnames=("guidance", "num_steps"))
    out = np.asarray(generate(params, *jax_inputs(noise, labels), guidance=0.0))
    assert np.abs(out - ref).max() <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5


@pytest.mark.parametrize("model,guidance,labels,steps", [
    ("rf-mini", 1.0, None, 1),  # guidance without labels
    ("rf-mini", 0.0, True, 0),
    ("rf-mini", 0.0, True, 1.5),
    ("rf-mini", float("nan"), True, 1),
])
def test_refuses_what_torch_refuses_with_the_same_message(models, model, guidance, labels, steps):
    s, params, generate = models[model]
    noise, lab = inputs()
    lab = lab if labels else None
    with pytest.raises(InputError) as torch_err:
        s.generate(noise, lab, guidance=guidance, num_steps=steps)
    with pytest.raises(InputError) as jax_err:
        generate(params, *jax_inputs(noise, lab), guidance=guidance, num_steps=steps)
    assert str(jax_err.value) == str(torch_err.value)


def test_conversion_names_every_bad_tensor(models):
    s, _, _ = models["rf-mini"]
    sd = dict(s.net.state_dict())
    del sd["blocks.1.attn.proj.bias"]
    sd["blocks.0.attn.extra"] = torch.zeros(3)
    sd["final_layer.linear.weight"] = torch.zeros(5, 64)
    with pytest.raises(InputError) as err:
        dit.convert_params(sd, s.config, "rf-mini")
    msg = str(err.value)
    assert "rf-mini" in msg and "missing tensors: blocks.1.attn.proj.bias" in msg
    assert "unexpected tensors: blocks.0.attn.extra" in msg
    assert "mis-shaped tensors: final_layer.linear.weight (file (5, 64), expected (16, 64))" in msg


def test_family_mismatch_is_named(models):
    rf, rf_params, _ = models["rf-mini"]
    with pytest.raises(InputError, match="missing tensors: h_embedder.mlp.0.bias"):
        dit.convert_params(rf.net.state_dict(), rf.config, "rf-mini", family="meanflow")
    mf_like = {**rf_params, "h_embedder": rf_params["t_embedder"]}  # a two-time DiT's params
    generate = dit.make_generate(rf.config, "rectified-flow", name="x")
    with pytest.raises(InputError, match="a MeanFlow network's"):
        generate(mf_like, *jax_inputs(*inputs()), guidance=0.0)
    assert dit.FAMILY_OPTIONS == ("num_steps",)


def test_docstring_examples_run():
    assert doctest.testmod(dit).failed == 0
