"""The sweep with --backend jax: the tpu preset's path run on the CPU (NFEBENCH_ALLOW_CPU=1),
on the fake JAX family of tests/conftest.py and, once, on a real model through the CLI."""

import json
import subprocess
import sys

import pytest

from adapters.api.errors import InputError
from harness import results
from harness.results import read_run
from harness.timing.sweep import (
    DECODER_ID,
    PRESETS,
    TPU_MODELS,
    SweepConfig,
    run_sweep,
    validate,
    with_preset,
)


@pytest.fixture
def allow_cpu(monkeypatch):
    monkeypatch.setenv("NFEBENCH_ALLOW_CPU", "1")


def test_tpu_preset_path_on_cpu_writes_a_schema_valid_run(tmp_path, fake_jax_family, allow_cpu):
    config = with_preset("tpu", models=("fake-jax", "fake-jax-latent"), batch_sizes=(1, 4), warmup=1, repeats=3,
                         max_time=None)
    res = run_sweep(config, tmp_path / "tpu.csv", tmp_path / "tpu.pyperf.json", progress=False)
    assert not res.errors
    df = read_run(tmp_path / "tpu.csv")
    assert list(df.columns) == list(results.COLUMNS) and set(df.status) == {results.OK}
    gate = df[df.metric.isin([results.MAX_ABS_DEVIATION, results.MEAN_ABS_DEVIATION])]
    timed = df[(df.model != "calibration") & ~df.index.isin(gate.index)]
    assert set(df.backend) == {"jax"} and set(df.device) == {"cpu"} and set(timed.dtype) == {"bfloat16"}
    # bf16 differs from its reference (the port in float32): deviations measured, random weights: unverified
    assert sorted(gate.model) == sorted(["fake-jax", "fake-jax-latent"] * 2) and (gate.value > 0).all()
    assert set(gate.quality) == {results.UNVERIFIED} and set(timed[timed.model != DECODER_ID].quality) == {
        results.UNVERIFIED}
    assert set(timed.compiled) == {True}
    points = {(m, int(b), d) for m, b, d in zip(timed.model, timed.batch_size, timed.decode)}
    assert points == ({(m, b, d) for m in ("fake-jax", "fake-jax-latent") for b in (1, 4) for d in ("off", "on")}
                      | {(DECODER_ID, b, "only") for b in (1, 4)})
    for _, rows in timed.groupby(["model", "batch_size", "decode"]):
        m = rows.set_index("metric")
        assert {results.COMPILE_MS, results.MS_PER_BATCH, results.IMAGES_PER_S, results.IMAGES_PER_S_PER_CHIP,
                results.PEAK_MEM_MB} <= set(m.index)
        assert m.loc[results.COMPILE_MS, "n"] == 1 and m.loc[results.MS_PER_BATCH, "n"] == 3
        assert json.loads(m.loc[results.IMAGES_PER_S_PER_CHIP, "config"])["chips"] == 1  # one CPU device
        assert m.loc[results.IMAGES_PER_S_PER_CHIP, "value"] == pytest.approx(m.loc[results.IMAGES_PER_S, "value"])
    dec = timed[(timed.model == DECODER_ID) & (timed.metric == results.MS_PER_BATCH)]
    assert set(dec.weights) == {"fake-vae"} and set(dec.params.astype(int)) == {7}
    # every point is traced once, when it is compiled, never in its timed calls (the decoder
    # point's latents come from the generator of the same batch size, already traced); the quality
    # gate traces each model's generate once in bf16 and once in float32 (its reference)
    compiles = timed[(timed.metric == results.COMPILE_MS) & (timed.model != DECODER_ID)]
    assert len(compiles) == 8 and len(fake_jax_family) == len(compiles) + 2 * 2


def test_compile_time_is_kept_out_of_the_latency_rows(tmp_path, fake_jax_family, allow_cpu, monkeypatch):
    """A port that is slow to trace (1 s per trace) leaves the timed calls fast."""
    import time

    from adapters.jax import sampler as jax_sampler

    real = jax_sampler.JaxSampler._function

    def slow_to_compile(self, part, guidance, options):
        fn = real(self, part, guidance, options)

        class Slow:
            def lower(self, *args):
                time.sleep(1.0)
                return fn.lower(*args)

            def __call__(self, *args):
                return fn(*args)

        return Slow()

    monkeypatch.setattr(jax_sampler.JaxSampler, "_function", slow_to_compile)
    config = with_preset("tpu", models=("fake-jax",), batch_sizes=(2,), decode="off", warmup=1, repeats=3)
    run_sweep(config, tmp_path / "r.csv", None, progress=False)
    m = read_run(tmp_path / "r.csv").set_index("metric")
    assert m.loc[results.COMPILE_MS, "value"] >= 1000
    assert m.loc[results.MS_PER_BATCH, "value"] < 500


def test_jax_sweep_input_errors(fake_jax_family, monkeypatch):
    monkeypatch.delenv("NFEBENCH_ALLOW_CPU", raising=False)
    with pytest.raises(InputError, match="JAX sees no TPU"):
        validate(with_preset("tpu", models=("fake-jax",)))
    with pytest.raises(InputError, match="always compiles with XLA"):
        validate(SweepConfig(backend="jax", models=("fake-jax",), device="cpu", compile="torch"))
    with pytest.raises(InputError, match="unknown backend"):
        validate(SweepConfig(backend="mxnet", models=("fake-jax",), device="cpu"))


def test_tpu_preset_is_the_issue_sweep():
    p = PRESETS["tpu"]
    assert p["backend"] == "jax" and p["dtype"] == "bfloat16" and p["decode"] == "both"
    assert p["batch_sizes"][0] == 1 and p["batch_sizes"][-1] == 256
    assert set(p["models"]) == set(TPU_MODELS) >= {"biflow-b2", "itarflow-b2", "itarflow-xl2", "sit-b2", "imf-b2"}


def test_every_preset_model_is_registered_and_the_tpu_ones_have_a_jax_port():
    from adapters import get_spec

    for preset in PRESETS.values():
        for model in preset["models"]:
            get_spec(model)  # an unknown id raises
    assert all(get_spec(m).jax_port for m in TPU_MODELS)


def test_cli_bench_backend_jax_on_a_real_model(tmp_path):
    out = tmp_path / "run.csv"
    cmd = [sys.executable, "-m", "harness.cli", "bench", "--preset", "tpu", "--models", "biflow-b2",
           "--batch-sizes", "1", "--decode", "off", "--warmup", "1", "--repeats", "2", "--no-progress",
           "--dtype", "float32", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "NFEBENCH_ALLOW_CPU": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = read_run(out)
    m = df[df.model == "biflow-b2"].set_index("metric")
    assert m.loc[results.MS_PER_IMAGE, "value"] > 0 and m.loc[results.COMPILE_MS, "value"] > 0
    assert m.loc[results.MS_PER_IMAGE, "backend"] == "jax" and "random-init" == m.loc[results.MS_PER_IMAGE, "weights"]
    no_tpu = subprocess.run(cmd[:-2] + ["--out", str(tmp_path / "x.csv")], capture_output=True, text=True,
                            timeout=300, env={k: v for k, v in __import__("os").environ.items()
                                              if k != "NFEBENCH_ALLOW_CPU"})
    assert no_tpu.returncode == 2 and "JAX sees no TPU" in no_tpu.stderr and not (tmp_path / "x.csv").exists()


def test_mfu_uses_the_peak_of_the_chips_used(tmp_path, fake_jax_family, allow_cpu, monkeypatch):
    """On a device JAX calls "TPU v4", MFU = FLOPs per batch / seconds / (275 TFLOP/s x chips)."""
    from harness.timing import jax_runner

    monkeypatch.setattr(jax_runner, "jax_device_name", lambda device: "TPU v4")
    config = with_preset("tpu", models=("fake-jax",), batch_sizes=(2,), decode="off", warmup=1, repeats=3,
                         calibrate=False)
    run_sweep(config, tmp_path / "r.csv", None, progress=False)
    m = read_run(tmp_path / "r.csv").set_index("metric")
    assert m.loc[results.MFU, "device_name"] == "TPU v4"
    cfg = json.loads(m.loc[results.MFU, "config"])
    assert cfg["peak_flops"] == 275e12 * cfg["chips"] and cfg["flops_per_batch"] == pytest.approx(2 * 1e-6 * 1e9)
    seconds = m.loc[results.MS_PER_BATCH, "value"] / 1e3
    assert m.loc[results.MFU, "value"] == pytest.approx(cfg["flops_per_batch"] / seconds / cfg["peak_flops"])


@pytest.mark.slow
def test_jax_settings_get_options_iterations_and_the_gate(tmp_path, allow_cpu):
    """tarflow-mini's Flax port in bf16, sequential and Jacobi: each compiled with its options, the
    decoding passes of the timed batch from the port's statistics, and both checked against the
    port in float32 at sequential decoding (the torch sampler's exact_options, which the port lacks).
    Two blocks of one layer: XLA's compile time, most of this test's, grows with the layers."""
    config = with_preset("tpu", models=("tarflow-mini",), batch_sizes=(2,), decode="off", warmup=1, repeats=5,
                         max_time=0.5, calibrate=False,
                         overrides={"tarflow-mini": {"num_blocks": 2, "layers_per_block": 1}},
                         options={"tarflow-mini": ({}, {"decoding": "jacobi", "jacobi_tol": 1e-3})})
    run_sweep(config, tmp_path / "r.csv", None, progress=False)
    df = read_run(tmp_path / "r.csv")
    timed = df[df.metric == results.MS_PER_IMAGE]
    seq, jac = (json.loads(c) for c in timed.config)
    assert seq["options"] == {} and seq["iterations_per_block"] == [15] * 2
    assert jac["options"] == {"decoding": "jacobi", "jacobi_tol": 0.001} and jac["iterations_per_block"] == [2] * 2
    assert list(timed.quality) == [results.UNVERIFIED] * 2  # random weights
    assert "not representative" in timed.notes.iloc[1] and "not representative" not in str(timed.notes.iloc[0])
    gate = df[df.metric == results.MEAN_ABS_DEVIATION]
    assert len(gate) == 2 and (gate.value > 0).all()  # bf16 against float32
    for c in gate.config:
        assert json.loads(c)["reference_setting"] == {"compiled": True, "dtype": "float32", "options": {}}
