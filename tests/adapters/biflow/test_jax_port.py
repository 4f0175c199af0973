"""The Flax BiFlow reverse model against the torch adapter on the same weights and noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adapters.biflow import jax_port as biflow
from adapters.jax.layers import patchify, rope_2d_tables, unpatchify
from adapters.layers import patchify as torch_patchify
from adapters.layers import rope_2d_tables as torch_rope_2d_tables
from adapters.api.errors import InputError

TINY = dict(hidden_size=64, depth=4, num_heads=2, num_stages=2, input_size=8, num_classes=10)
TOL = 1e-4  # max abs difference, float32, outputs of scale ~1-5


@pytest.fixture(scope="module")
def model(make_random_sampler):
    """(torch sampler with random weights, converted params, jitted JAX generate)."""
    s = make_random_sampler("biflow-b2", seed=1, **TINY)
    params = biflow.convert_params(s.net.state_dict(), s.config, "biflow-b2")
    generate = jax.jit(biflow.make_generate(s.config, "biflow", name="biflow-b2"),
                       static_argnames=("guidance", *biflow.FAMILY_OPTIONS))
    return s, params, generate


def inputs(n=3, size=8, seed=0):
    noise = torch.randn(n, 4, size, size, generator=torch.Generator().manual_seed(seed))
    return noise, torch.tensor([3, 0, 9][:n])


def jax_inputs(noise, labels, dtype=jnp.float32):
    return jnp.asarray(noise.numpy(), dtype), None if labels is None else jnp.asarray(labels.numpy(), jnp.int32)


def test_patchify_and_rope_tables_match_torch():
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    tokens = patchify(jnp.asarray(x.numpy()), 2)
    np.testing.assert_array_equal(np.asarray(tokens), torch_patchify(x, 2).numpy())
    np.testing.assert_array_equal(np.asarray(unpatchify(tokens, 2, (8, 8))), x.numpy())
    for ours, theirs in zip(rope_2d_tables(4, 32), torch_rope_2d_tables(4, 32)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("guidance,use_labels", [(0.0, True), (0.0, False), (1.5, True)])
def test_matches_torch(model, guidance, use_labels):
    s, params, generate = model
    noise, labels = inputs()
    labels = labels if use_labels else None
    ref = s.generate(noise, labels, guidance=guidance).numpy()
    out = generate(params, *jax_inputs(noise, labels), guidance=guidance)
    assert out.shape == ref.shape and out.dtype == jnp.float32
    assert np.abs(np.asarray(out) - ref).max() <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5  # the network moved the sample: the check has teeth


def test_guidance_is_an_input_that_changes_the_sample(model):
    s, params, generate = model
    x = jax_inputs(*inputs())
    assert float(jnp.abs(generate(params, *x, guidance=1.5) - generate(params, *x, guidance=0.0)).max()) > 0.1


def test_bfloat16_close_to_float32(model):
    s, params, generate = model
    noise, labels = inputs()
    ref = np.asarray(generate(params, *jax_inputs(noise, labels), guidance=1.5))
    p16 = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
    out = generate(p16, *jax_inputs(noise, labels, jnp.bfloat16), guidance=1.5)
    assert out.dtype == jnp.bfloat16
    assert np.abs(np.asarray(out, np.float32) - ref).max() <= 5e-2 * np.abs(ref).max()


@pytest.mark.slow
def test_full_size_biflow_b2_matches_torch(make_random_sampler):
    s = make_random_sampler("biflow-b2", seed=2)
    params = biflow.convert_params(s.net.state_dict(), s.config, "biflow-b2")
    noise, labels = inputs(n=1, size=32)
    ref = s.generate(noise, labels, guidance=0.0).numpy()
    generate = jax.jit(biflow.make_generate(s.config, "biflow"), static_argnames=("guidance",))
    out = np.asarray(generate(params, *jax_inputs(noise, labels), guidance=0.0))
    assert np.abs(out - ref).max() <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5


@pytest.mark.parametrize("guidance,use_labels", [(1.0, False), (float("inf"), True)])
def test_refuses_what_torch_refuses_with_the_same_message(model, guidance, use_labels):
    s, params, generate = model
    noise, labels = inputs()
    labels = labels if use_labels else None
    with pytest.raises(InputError) as torch_err:
        s.generate(noise, labels, guidance=guidance)
    with pytest.raises(InputError) as jax_err:
        generate(params, *jax_inputs(noise, labels), guidance=guidance)
    assert str(jax_err.value) == str(torch_err.value)


def test_conversion_names_every_bad_tensor(model):
    s, _, _ = model
    sd = dict(s.net.state_dict())
    del sd["blocks.2.attn.q_norm.weight"]
    sd["denoise_block.attn.qkv.bias"] = torch.zeros(192)  # the modern blocks have no qkv bias
    sd["head.weight"] = torch.zeros(16, 32)
    with pytest.raises(InputError) as err:
        biflow.convert_params(sd, s.config, "biflow-b2")
    msg = str(err.value)
    assert "biflow-b2" in msg and "missing tensors: blocks.2.attn.q_norm.weight" in msg
    assert "unexpected tensors: denoise_block.attn.qkv.bias" in msg
    assert "mis-shaped tensors: head.weight (file (16, 32), expected (16, 64))" in msg


def test_only_the_biflow_family():
    with pytest.raises(ValueError, match="biflow"):
        biflow.make_generate(biflow.BiFlowConfig(), "rectified-flow")
