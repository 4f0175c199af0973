"""The JAX sampler wrapper against the contract alone, on the fake family of
tests/conftest.py (`fake_jax_family`), so placement, sharding, dtypes, option checks and
compilation are tested apart from the real ports (whose parity tests sit beside this file)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adapters import load_sampler
from adapters.jax import sampler as jax_sampler
from adapters.api import devices as api_devices
from adapters.api.errors import InputError
from adapters.api.sampler import NonFiniteSampleError
from adapters.api.seeding import sample_labels, sample_noise


def inputs(n, seed=0):
    return sample_noise(seed, range(n), (4, 4, 4)), sample_labels(seed, range(n), 10)


def test_jax_sampler_matches_the_torch_sampler_it_was_converted_from(fake_jax_family):
    t = load_sampler("fake-jax")
    j = load_sampler("fake-jax", backend="jax", device="cpu")
    assert j.info == t.info and j.backend == "jax"
    noise, labels = inputs(5)
    for kwargs in ({}, {"guidance": 1.5}, {"guidance": 0.5, "scale": 2.0}):
        out = j.generate(noise, labels, **kwargs)
        assert isinstance(out, jax.Array) and out.shape == (5, 4, 4, 4)
        np.testing.assert_allclose(np.asarray(out), t.generate(noise, labels, **kwargs).numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(j.decode(out)), np.clip(np.asarray(out), -1, 1))


def test_bfloat16_params_and_inputs(fake_jax_family):
    j = load_sampler("fake-jax", backend="jax", dtype=torch.bfloat16)
    noise, labels = inputs(3)
    out = j.generate(noise, labels)
    assert out.dtype == jnp.bfloat16
    ref = load_sampler("fake-jax").generate(noise, labels).numpy()
    np.testing.assert_allclose(np.asarray(out, dtype=np.float32), ref, atol=0.05, rtol=0.02)


def test_bad_inputs_and_options_are_input_errors(fake_jax_family):
    j = load_sampler("fake-jax", backend="jax")
    noise, labels = inputs(2)
    with pytest.raises(InputError, match="unknown option.*steps.*accepts: scale"):
        j.generate(noise, labels, steps=2)
    with pytest.raises(InputError, match="noise has shape"):
        j.generate(noise[:, :2], labels)
    with pytest.raises(InputError, match=r"labels must lie in \[0, 10\)"):
        j.generate(noise, labels + 10)
    with pytest.raises(InputError, match="scale must not be 0"):  # the port's own check, at trace time
        j.generate(noise, labels, scale=0.0)
    with pytest.raises(InputError, match="guidance must be a finite number"):
        j.generate(noise, labels, guidance=float("nan"))
    with pytest.raises(InputError, match="unknown dtype"):
        load_sampler("fake-jax", backend="jax", dtype="int8")
    with pytest.raises(InputError, match="unknown backend 'tf'"):
        load_sampler("fake-jax", backend="tf")


def test_non_finite_output_is_refused_and_non_finite_input_is_the_inputs_fault(fake_jax_family):
    j = load_sampler("fake-jax", backend="jax")
    noise, labels = inputs(3)
    noise[1, 0, 0, 0] = 1e38  # finite, but scaled past float32's range by the port
    with pytest.raises(NonFiniteSampleError, match=r"1 of 3 samples \(batch rows \[1\]\)"):
        j.generate(noise, labels, scale=1e3)
    noise[1, 0, 0, 0] = float("inf")
    with pytest.raises(InputError, match=r"the noise passed in holds NaN or Inf in 1 of 3 samples \(batch rows \[1\]\)"):
        j.generate(noise, labels)


def test_lists_numpy_arrays_and_empty_batches(fake_jax_family):
    j = load_sampler("fake-jax", backend="jax")
    noise, labels = inputs(3)
    ref = np.asarray(j.generate(noise, labels))
    np.testing.assert_array_equal(np.asarray(j.generate(noise.numpy(), labels.tolist())), ref)
    np.testing.assert_array_equal(np.asarray(j.generate(noise, labels.to(torch.int16))), ref)
    assert j.generate(noise[:0], labels[:0]).shape == (0, 4, 4, 4)
    with pytest.raises(InputError, match=r"decode takes model-space samples of shape \(N, 4, 4, 4\)"):
        j.decode(np.zeros((2, 3, 4, 4), np.float32))


def test_compiled_call_is_compiled_once_and_reports_its_cost(fake_jax_family):
    traces = fake_jax_family
    j = load_sampler("fake-jax", backend="jax")
    call, _ = j.compile("off", 4, guidance=0.0)
    assert call.compile_s > 0 and call.num_devices == 1 and len(traces) == 1
    assert call.memory_bytes is None or call.memory_bytes > 0
    noise, labels = inputs(4)
    args = j.arguments("off", 4, noise, labels)
    for _ in range(3):
        out = call.call(args)
    assert len(traces) == 1  # the timed calls never trace or compile again
    np.testing.assert_allclose(np.asarray(out), load_sampler("fake-jax").generate(noise, labels).numpy(), atol=1e-6)


def test_unported_family_and_missing_jax_are_named(fake_jax_family, monkeypatch):
    with pytest.raises(InputError, match="family 'fake-jax' has no JAX port"):
        load_sampler("fake-jax-unported", backend="jax")
    monkeypatch.setitem(sys.modules, "jax", None)  # what an absent package looks like to import
    with pytest.raises(InputError, match=r"pip install 'nfebench\[jax\]'"):
        api_devices.require_jax()


def test_asking_for_an_absent_tpu_says_what_to_do(monkeypatch):
    monkeypatch.delenv(api_devices.ALLOW_CPU_ENV, raising=False)
    with pytest.raises(InputError, match="JAX sees no TPU.*NFEBENCH_ALLOW_CPU=1"):
        api_devices.jax_devices("tpu")
    monkeypatch.setenv(api_devices.ALLOW_CPU_ENV, "1")
    assert [d.platform for d in api_devices.jax_devices("tpu")] == ["cpu"]
    with pytest.raises(InputError, match="unknown JAX device 'npu'"):
        api_devices.jax_devices("npu")


def test_devices_for_batch_uses_the_most_devices_that_divide_the_batch():
    devs = list("abcdefgh")
    assert [len(jax_sampler.devices_for_batch(devs, b)) for b in (1, 2, 3, 6, 8, 12, 256)] == [1, 2, 3, 6, 8, 6, 8]


def test_a_batch_split_over_two_devices_gives_the_same_samples(tmp_path):
    """Two CPU devices (XLA's host device count): rows are sharded, outputs equal one device's."""
    script = tmp_path / "sharded.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np, jax
        assert len(jax.devices()) == 2, jax.devices()
        from adapters.jax.sampler import JaxSampler
        from adapters.api.seeding import sample_noise, sample_labels
        import torch
        from adapters import load_sampler
        kw = dict(hidden_size=32, depth=1, num_heads=2, input_size=4, num_classes=10, in_channels=4, space="latent")
        net = load_sampler("rf-mini", **kw).net
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():  # adaLN-Zero's zeros would make the output the input
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        torch.save(net.state_dict(), {str(tmp_path / "rf.pt")!r})
        kw["checkpoint"] = {str(tmp_path / "rf.pt")!r}
        two = load_sampler("rf-mini", backend="jax", device="cpu", **kw)
        noise, labels = sample_noise(0, range(4), two.info.sample_shape), sample_labels(0, range(4), 10)
        call, _ = two.compile("off", 4, guidance=1.0)
        args = two.arguments("off", 4, noise, labels)
        assert call.num_devices == 2 and len(args[2].sharding.device_set) == 2
        out_two = np.asarray(call.call(args))
        one = load_sampler("rf-mini", backend="jax", device="cpu", **kw)
        one.devices = one.devices[:1]
        out_one = np.asarray(one.generate(noise, labels, guidance=1.0))
        diff = float(np.abs(out_two - out_one).max())
        assert diff <= 1e-5 * float(np.abs(out_one).max()), diff
    """))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
