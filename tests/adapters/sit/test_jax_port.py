"""The Flax SiT sampler (adapters/sit/jax_port.py) against the torch adapter on the same weights and noise."""

import doctest

import numpy as np
import pytest
import torch

from adapters.api.checkpoint import CheckpointWarning
from adapters.sit import jax_port

from ..jax_parity import Port, jax_backend_twin, relative_deviation

TINY = dict(hidden_size=64, depth=2, num_heads=4, input_size=8, num_classes=10)
TOL = 1e-4  # relative: max |jax - torch| / max |torch|, float32


@pytest.fixture(scope="module")
def port(make_random_sampler):
    """sit-b2 at a small size, with random non-zero weights, beside its port."""
    return Port.of(make_random_sampler("sit-b2", seed=1, **TINY), jax_port)


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("num_steps", [1, 2])
@pytest.mark.parametrize("guidance,use_labels", [(0.0, True), (1.5, True), (0.0, False)])
def test_matches_torch(port, solver, num_steps, guidance, use_labels):
    noise, labels = port.inputs(labels=use_labels)
    ref, out = port.samples(noise, labels, guidance=guidance, num_steps=num_steps, solver=solver)
    dev = relative_deviation(out, ref)
    print(f"sit jax {solver} k={num_steps} g={guidance} labels={use_labels}: relative deviation {dev:.2e}")
    assert dev <= TOL
    assert np.abs(ref - noise.numpy()).max() > 0.5  # the network moved the sample: the check has teeth


def test_defaults_are_the_configs(port):
    ref, out = port.samples(*port.inputs(), guidance=0.0)  # config: 1 Euler step
    assert relative_deviation(out, ref) <= TOL


def test_bfloat16_close_to_float32(port):
    assert port.bfloat16_deviation(*port.inputs(), guidance=1.5, num_steps=2, solver="heun") <= 5e-2


@pytest.mark.parametrize("guidance,labels,options", [
    (1.0, None, {}),
    (0.0, True, {"num_steps": 0}),
    (0.0, True, {"num_steps": 2.0}),
    (0.0, True, {"solver": "dopri5"}),
    (float("nan"), True, {}),
])
def test_refuses_what_torch_refuses_with_the_same_message(port, guidance, labels, options):
    port.assert_refuses_like_torch(*port.inputs(labels=bool(labels)), guidance=guidance, **options)


def test_checkpoint_loads_into_the_jax_sampler(port, tmp_path):
    """load_sampler(backend="jax"): the torch adapter's checkpoint reader (learned sigma dropped) feeds the port."""
    s = port.sampler
    sd = dict(s.net.state_dict())
    w, b = sd["final_layer.linear.weight"], sd["final_layer.linear.bias"]  # (16, 64), (16,): (p, q, c) rows
    sigma_w = torch.randn(4, 4, 64)  # SiT's learned-sigma rows, interleaved after each (p, q) group's 4 channels
    sd["final_layer.linear.weight"] = torch.cat([w.reshape(4, 4, 64), sigma_w], dim=1).reshape(32, 64)
    sd["final_layer.linear.bias"] = torch.cat([b.reshape(4, 4), torch.randn(4, 4)], dim=1).reshape(32)
    path = tmp_path / "sit.pt"
    torch.save(sd, path)
    with pytest.warns(CheckpointWarning, match="dropped the learned-sigma output channels"):
        js = jax_backend_twin("sit-b2", path, **TINY)
    assert js.family_options == jax_port.FAMILY_OPTIONS
    noise, labels = port.inputs()
    ref = s.generate(noise, labels, guidance=1.5, num_steps=2)
    assert relative_deviation(js.generate(noise, labels, guidance=1.5, num_steps=2), ref) <= TOL


def test_conversion_names_every_bad_tensor(port):
    msg = port.conversion_error(drop=("blocks.1.attn.proj.bias",),
                                put={"h_embedder.mlp.0.bias": torch.zeros(64)})  # a MeanFlow network's
    assert "missing tensors: blocks.1.attn.proj.bias" in msg
    assert "unexpected tensors: h_embedder.mlp.0.bias" in msg


def test_docstring_examples_run():
    assert doctest.testmod(jax_port).failed == 0
