"""The Flax BiFlow reverse model against the torch adapter on the same weights and noise."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adapters.biflow import jax_port as biflow
from adapters.jax.layers import patchify, rope_2d_tables, unpatchify
from adapters.layers import patchify as torch_patchify
from adapters.layers import rope_2d_tables as torch_rope_2d_tables

from ..jax_parity import Port, jax_inputs, max_deviation

TINY = dict(hidden_size=64, depth=4, num_heads=2, num_stages=2, input_size=8, num_classes=10)
TOL = 1e-4  # max abs difference, float32, outputs of scale ~1-5


@pytest.fixture(scope="module")
def model(make_random_sampler):
    """biflow-b2 at a small size, with random weights, beside its port."""
    return Port.of(make_random_sampler("biflow-b2", seed=1, **TINY), biflow)


def test_patchify_and_rope_tables_match_torch():
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    tokens = patchify(jnp.asarray(x.numpy()), 2)
    np.testing.assert_array_equal(np.asarray(tokens), torch_patchify(x, 2).numpy())
    np.testing.assert_array_equal(np.asarray(unpatchify(tokens, 2, (8, 8))), x.numpy())
    for ours, theirs in zip(rope_2d_tables(4, 32), torch_rope_2d_tables(4, 32)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("guidance,use_labels", [(0.0, True), (0.0, False), (1.5, True)])
def test_matches_torch(model, guidance, use_labels):
    noise, labels = model.inputs(labels=use_labels)
    ref, out = model.samples(noise, labels, guidance=guidance)
    assert max_deviation(out, ref) <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5  # the network moved the sample: the check has teeth


def test_guidance_is_an_input_that_changes_the_sample(model):
    x = jax_inputs(*model.inputs())
    diff = model.generate(model.params, *x, guidance=1.5) - model.generate(model.params, *x, guidance=0.0)
    assert float(jnp.abs(diff).max()) > 0.1


def test_bfloat16_close_to_float32(model):
    assert model.bfloat16_deviation(*model.inputs(), guidance=1.5) <= 5e-2


@pytest.mark.slow
def test_full_size_biflow_b2_matches_torch(make_random_sampler):
    full = Port.of(make_random_sampler("biflow-b2", seed=2), biflow)
    noise, labels = full.inputs(n=1)
    ref, out = full.samples(noise, labels, guidance=0.0)
    assert max_deviation(out, ref) <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5


@pytest.mark.parametrize("guidance,use_labels", [(1.0, False), (float("inf"), True)])
def test_refuses_what_torch_refuses_with_the_same_message(model, guidance, use_labels):
    model.assert_refuses_like_torch(*model.inputs(labels=use_labels), guidance=guidance)


def test_conversion_names_every_bad_tensor(model):
    msg = model.conversion_error(drop=("blocks.2.attn.q_norm.weight",), put={
        "denoise_block.attn.qkv.bias": torch.zeros(192),  # the modern blocks have no qkv bias
        "head.weight": torch.zeros(16, 32)})
    assert "biflow-b2" in msg and "missing tensors: blocks.2.attn.q_norm.weight" in msg
    assert "unexpected tensors: denoise_block.attn.qkv.bias" in msg
    assert "mis-shaped tensors: head.weight (file (16, 32), expected (16, 64))" in msg


def test_only_the_biflow_family():
    with pytest.raises(ValueError, match="biflow"):
        biflow.make_generate(biflow.BiFlowConfig(), "rectified-flow")
