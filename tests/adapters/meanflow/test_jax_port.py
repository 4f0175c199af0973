"""The Flax MeanFlow sampler (adapters/meanflow/jax_port.py) against the official code
(github:Gsunshine/meanflow, its TrainState folder and ``generate``) and against the torch adapter
on the same weights and noise."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from adapters import load_sampler
from adapters.api.errors import InputError

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax_port = pytest.importorskip("adapters.meanflow.jax_port")

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)
TOL = 1e-4  # relative: max |jax - reference| / max |reference|, float32
CASES = [(k, mode) for k in (1, 2) for mode in ("cfg", "none", "uncond")]  # as test_model.py's
GUIDANCE = {"cfg": 1.0, "none": 0.0, "uncond": 1.0}


def rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def port(make_random_sampler):
    """(torch sampler with random non-zero weights, converted params, jitted JAX generate)."""
    s = make_random_sampler("meanflow-b4", seed=1, **TINY)
    params = jax_port.convert_params(s.net.state_dict(), s.config, "meanflow-b4")
    generate = jax.jit(jax_port.make_generate(s.config, name="meanflow-b4"),
                       static_argnames=("guidance", *jax_port.FAMILY_OPTIONS))
    return s, params, generate


def inputs(n=3, seed=0):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed)), torch.tensor([3, 0, 9][:n])


def jax_inputs(noise, labels, dtype=jnp.float32):
    return jnp.asarray(noise.numpy(), dtype), None if labels is None else jnp.asarray(labels.numpy(), jnp.int32)


@pytest.mark.parametrize("num_steps,mode", CASES)
def test_the_jax_backend_matches_the_official_sampler(official, saved, num_steps, mode):
    """load_sampler(backend="jax") with the official checkpoint folder: the same EMA, the same samples."""
    state, workdir = saved
    noise, labels, ref = official.sample(state.ema_params, num_steps, labels=mode != "uncond",
                                         guidance_eq="none" if mode == "none" else "cfg")
    g = GUIDANCE[mode]
    js = load_sampler("meanflow-b4", checkpoint=str(workdir), backend="jax", device="cpu", **TINY, guidance=g)
    out = js.generate(noise, labels, guidance=g, num_steps=num_steps)
    dev = rel(out, ref)
    print(f"meanflow jax k={num_steps} {mode}: relative deviation {dev:.2e}")
    assert dev <= TOL
    assert (ref - noise).abs().max() > 0.5  # the network moved the sample: the check has teeth
    torch_info = load_sampler("meanflow-b4", checkpoint=str(workdir), **TINY, guidance=g).info
    assert js.info == torch_info and js.info.weights.endswith("#ema_params")
    assert js.family_options == jax_port.FAMILY_OPTIONS == ("num_steps",)


@pytest.mark.parametrize("num_steps,use_labels", [(1, True), (2, True), (3, False), (None, True)])
def test_matches_torch(port, num_steps, use_labels):
    s, params, generate = port
    noise, labels = inputs()
    labels = labels if use_labels else None
    opts = {} if num_steps is None else {"num_steps": num_steps}  # None: config.num_steps
    ref = s.generate(noise, labels, **opts).numpy()
    out = generate(params, *jax_inputs(noise, labels), guidance=1.0, **opts)
    assert out.shape == ref.shape and out.dtype == jnp.float32
    assert rel(out, ref) <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5


def test_bfloat16_close_to_float32(port):
    s, params, generate = port
    noise, labels = inputs()
    ref = np.asarray(generate(params, *jax_inputs(noise, labels), guidance=1.0, num_steps=2))
    p16 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
    out = generate(p16, *jax_inputs(noise, labels, jnp.bfloat16), guidance=1.0, num_steps=2)
    assert out.dtype == jnp.bfloat16
    assert rel(np.asarray(out, np.float32), ref) <= 5e-2


@pytest.mark.parametrize("guidance,options", [
    (2.0, {}),  # not the trained scale
    (0.0, {}),
    (float("nan"), {}),
    (1.0, {"num_steps": 0}),
    (1.0, {"num_steps": 1.5}),
])
def test_refuses_what_torch_refuses_with_the_same_message(port, guidance, options):
    s, params, generate = port
    noise, labels = inputs()
    with pytest.raises(InputError) as torch_err:
        s.generate(noise, labels, guidance=guidance, **options)
    with pytest.raises(InputError) as jax_err:
        generate(params, *jax_inputs(noise, labels), guidance=guidance, **options)
    assert str(jax_err.value) == str(torch_err.value)


def test_conversion_names_every_bad_tensor(port):
    s, _, _ = port
    sd = dict(s.net.state_dict())
    del sd["h_embedder.mlp.0.bias"]
    sd["blocks.0.attn.extra"] = torch.zeros(3)
    with pytest.raises(InputError) as err:
        jax_port.convert_params(sd, s.config, "meanflow-b4")
    assert "missing tensors: h_embedder.mlp.0.bias" in str(err.value)
    assert "unexpected tensors: blocks.0.attn.extra" in str(err.value)


def test_docstring_examples_run():
    assert doctest.testmod(jax_port).failed == 0
