"""The Flax Rectified Flow sampler (adapters/flowmatch/jax_port.py) against the torch adapter on the same weights
and noise."""

import doctest

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adapters.api.errors import InputError
from adapters.flowmatch import jax_port as dit

from ..jax_parity import Port, jax_inputs, max_deviation

TINY = dict(hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10, in_channels=4, space="latent")
# DiT-B/2 on the 4x32x32 latent, the size of the retired rf-b2 (and of sit-b2)
RF_B2 = dict(hidden_size=768, depth=12, num_heads=12, input_size=32, in_channels=4, num_classes=1000, space="latent")
TOL = 1e-4  # max abs difference, float32, outputs of scale ~1-5


@pytest.fixture(scope="module")
def models(make_random_sampler):
    """model -> the torch sampler with random weights beside its port."""
    return {"rf-mini": Port.of(make_random_sampler("rf-mini", seed=1, **TINY), dit)}


@pytest.mark.parametrize("model,guidance,steps,use_labels", [
    ("rf-mini", 0.0, 1, True),
    ("rf-mini", 0.0, 2, False),
    ("rf-mini", 1.5, 1, True),
    ("rf-mini", 1.5, 2, True),
    ("rf-mini", 0.0, None, True),  # config.num_steps
])
def test_matches_torch(models, model, guidance, steps, use_labels):
    noise, labels = models[model].inputs(labels=use_labels)
    opts = {} if steps is None else {"num_steps": steps}
    ref, out = models[model].samples(noise, labels, guidance=guidance, **opts)
    assert max_deviation(out, ref) <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5  # the network moved the sample: the check has teeth


def test_guidance_changes_the_rf_sample(models):
    rf = models["rf-mini"]
    x = jax_inputs(*rf.inputs())
    diff = rf.generate(rf.params, *x, guidance=1.5, num_steps=1) - rf.generate(rf.params, *x, guidance=0.0, num_steps=1)
    assert float(jnp.abs(diff).max()) > 0.1


def test_bfloat16_close_to_float32(models):
    # guided and two steps: every DiT path but the h embedder
    assert models["rf-mini"].bfloat16_deviation(*models["rf-mini"].inputs(), guidance=1.5, num_steps=2) <= 5e-2


@pytest.mark.slow
def test_full_size_rf_at_b2_matches_torch(make_random_sampler):
    full = Port.of(make_random_sampler("rf-mini", seed=2, **RF_B2), dit)
    noise, labels = full.inputs(n=1)
    ref, out = full.samples(noise, labels, guidance=0.0)
    assert max_deviation(out, ref) <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5


@pytest.mark.parametrize("model,guidance,labels,steps", [
    ("rf-mini", 1.0, None, 1),  # guidance without labels
    ("rf-mini", 0.0, True, 0),
    ("rf-mini", 0.0, True, 1.5),
    ("rf-mini", float("nan"), True, 1),
])
def test_refuses_what_torch_refuses_with_the_same_message(models, model, guidance, labels, steps):
    models[model].assert_refuses_like_torch(*models[model].inputs(labels=bool(labels)), guidance=guidance,
                                            num_steps=steps)


def test_conversion_names_every_bad_tensor(models):
    msg = models["rf-mini"].conversion_error(drop=("blocks.1.attn.proj.bias",), put={
        "blocks.0.attn.extra": torch.zeros(3), "final_layer.linear.weight": torch.zeros(5, 64)})
    assert "rf-mini" in msg and "missing tensors: blocks.1.attn.proj.bias" in msg
    assert "unexpected tensors: blocks.0.attn.extra" in msg
    assert "mis-shaped tensors: final_layer.linear.weight (file (5, 64), expected (16, 64))" in msg


def test_family_mismatch_is_named(models):
    rf = models["rf-mini"]
    with pytest.raises(InputError, match="missing tensors: h_embedder.mlp.0.bias"):
        dit.convert_params(rf.sampler.net.state_dict(), rf.sampler.config, "rf-mini", family="meanflow")
    mf_like = {**rf.params, "h_embedder": rf.params["t_embedder"]}  # a two-time DiT's params
    generate = dit.make_generate(rf.sampler.config, "rectified-flow", name="x")
    with pytest.raises(InputError, match="a MeanFlow network's"):
        generate(mf_like, *jax_inputs(*rf.inputs()), guidance=0.0)
    assert dit.FAMILY_OPTIONS == ("num_steps",)


def test_docstring_examples_run():
    assert doctest.testmod(dit).failed == 0
