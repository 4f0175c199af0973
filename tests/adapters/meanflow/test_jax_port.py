"""The Flax MeanFlow sampler (adapters/meanflow/jax_port.py) against the official code
(github:Gsunshine/meanflow, its TrainState folder and ``generate``) and against the torch adapter
on the same weights and noise."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

pytest.importorskip("jax")
jax_port = pytest.importorskip("adapters.meanflow.jax_port")

from ..jax_parity import Port, jax_backend_twin, relative_deviation  # noqa: E402 (needs jax)

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)
TOL = 1e-4  # relative: max |jax - reference| / max |reference|, float32
CASES = [(k, mode) for k in (1, 2) for mode in ("cfg", "none", "uncond")]  # as test_model.py's


@pytest.fixture(scope="module")
def port(make_random_sampler):
    """meanflow-b4 at a small size, with random non-zero weights, beside its port."""
    return Port.of(make_random_sampler("meanflow-b4", seed=1, **TINY), jax_port)


@pytest.mark.parametrize("num_steps,mode", CASES)
def test_the_jax_backend_matches_the_official_sampler(official, saved, num_steps, mode):
    """load_sampler(backend="jax") with the official checkpoint folder: the same EMA, the same samples
    (and the torch adapter's info, word for word)."""
    js = official.assert_reproduced(saved, num_steps, mode, tol=TOL, load=jax_backend_twin)
    assert js.info.weights.endswith("#ema_params")
    assert js.family_options == jax_port.FAMILY_OPTIONS == ("num_steps",)


@pytest.mark.parametrize("num_steps,use_labels", [(1, True), (2, True), (3, False), (None, True)])
def test_matches_torch(port, num_steps, use_labels):
    noise, labels = port.inputs(labels=use_labels)
    opts = {} if num_steps is None else {"num_steps": num_steps}  # None: config.num_steps
    ref, out = port.samples(noise, labels, torch_options=opts, guidance=1.0, **opts)
    assert relative_deviation(out, ref) <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5


def test_bfloat16_close_to_float32(port):
    assert port.bfloat16_deviation(*port.inputs(), guidance=1.0, num_steps=2) <= 5e-2


@pytest.mark.parametrize("guidance,options", [
    (2.0, {}),  # not the trained scale
    (0.0, {}),
    (float("nan"), {}),
    (1.0, {"num_steps": 0}),
    (1.0, {"num_steps": 1.5}),
])
def test_refuses_what_torch_refuses_with_the_same_message(port, guidance, options):
    port.assert_refuses_like_torch(*port.inputs(), guidance=guidance, **options)


def test_conversion_names_every_bad_tensor(port):
    msg = port.conversion_error(drop=("h_embedder.mlp.0.bias",), put={"blocks.0.attn.extra": torch.zeros(3)})
    assert "missing tensors: h_embedder.mlp.0.bias" in msg
    assert "unexpected tensors: blocks.0.attn.extra" in msg


def test_docstring_examples_run():
    assert doctest.testmod(jax_port).failed == 0
