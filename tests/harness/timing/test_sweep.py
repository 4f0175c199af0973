"""The sweep end to end on fake samplers: rows, pyperf JSON, OOM, errors, interruption, input checks."""

import json
import math
import subprocess
import sys

import pyperf
import pytest
import torch

from adapters.api.errors import InputError
from harness import results
from harness.results import read_run
from harness.timing.sweep import (
    DECODER_ID,
    PRESETS,
    Point,
    SweepConfig,
    compile_sampler,
    plan,
    run_sweep,
    validate,
    with_preset,
)

FAST = dict(device="cpu", warmup=1, repeats=3, calibrate=False)


def run(tmp_path, name="run", **fields):
    config = SweepConfig(**{**FAST, **fields})
    out, js = tmp_path / f"{name}.csv", tmp_path / f"{name}.pyperf.json"
    return run_sweep(config, out, js, progress=False), out, js


def ok(df):
    return df[df.status == results.OK]


def test_tiny_sweep_writes_a_schema_valid_run_file(tmp_path, fake_models):
    res, out, _ = run(tmp_path, models=("fake-a", "fake-b", "fake-pixel"), batch_sizes=(1, 3), decode="both",
                      calibrate=True, seed=7)
    df = read_run(out)
    assert list(df.columns) == list(results.COLUMNS)
    assert len(df) == len(res.rows) and set(df.status) == {results.OK}
    assert df.run_id.nunique() == 1 and df.git_sha.str.len().min() >= 7 and (df.versions.str.contains("torch=")).all()
    timed = df[df.model != "calibration"].astype({"seed": int, "batch_size": int})  # blank for calibration
    assert set(timed.seed) == {7} and set(timed.device) == {"cpu"} and set(timed.backend) == {"torch"}
    assert set(timed.dtype) == {"float32"} and set(timed.compiled) == {False}
    # generator and end-to-end points for every model and batch size; decoder alone once per batch size
    points = timed.groupby(["model", "batch_size", "decode"]).size()
    expected = {(m, bs, d) for m in ("fake-a", "fake-b", "fake-pixel") for bs in (1, 3) for d in ("off", "on")}
    expected |= {(DECODER_ID, bs, "only") for bs in (1, 3)}
    assert set(points.index) == expected
    for (model, bs, decode), rows in timed.groupby(["model", "batch_size", "decode"]):
        m = rows.set_index("metric")
        assert set(m.index) >= {results.MS_PER_BATCH, results.MS_PER_IMAGE, results.IMAGES_PER_S}
        assert results.MFU not in m.index  # no known peak on a CPU
        assert (m.loc[[results.MS_PER_BATCH, results.MS_PER_IMAGE, results.IMAGES_PER_S], "n"] == 3).all()
        batch_ms = m.loc[results.MS_PER_BATCH, "value"]
        assert batch_ms > 0
        assert m.loc[results.MS_PER_IMAGE, "value"] == pytest.approx(batch_ms / bs)
        assert m.loc[results.IMAGES_PER_S, "value"] == pytest.approx(1e3 * bs / batch_ms)  # odd n: exact
        assert m.loc[results.MS_PER_BATCH, "spread"] >= 0
        config = json.loads(m.loc[results.MS_PER_BATCH, "config"])
        assert config["warmup"] == 1 and config["repeats"] == 3
    weights = timed.groupby(["model", "decode"]).weights.first()
    assert weights[("fake-a", "off")] == "random-init"
    assert weights[("fake-a", "on")] == "random-init+vae:fake-vae"
    assert weights[("fake-pixel", "on")] == "random-init"  # no decoder to name
    assert weights[(DECODER_ID, "only")] == "fake-vae"
    assert set(json.loads(c)["decoder_of"] for c in timed[timed.decode == "only"].config) == {"fake-a"}
    calib = df[df.model == "calibration"]
    assert list(calib.metric) == [results.CALIBRATION_MS] * 2  # at the start and at the end of the sweep
    assert [json.loads(c)["when"] for c in calib.config] == ["start", "end"]
    assert (calib.value > 0).all() and calib.n.between(5, 20).all()
    assert ((calib.ci_low <= calib.value) & (calib.value <= calib.ci_high)).all()
    assert df.index[df.model == "calibration"].tolist() == [0, len(df) - 1]


def test_pyperf_json_loads_back_and_compares(tmp_path, fake_models):
    res_a, out_a, js_a = run(tmp_path, "a", models=("fake-a",), batch_sizes=(1, 2), decode="both")
    res_b, _, js_b = run(tmp_path, "b", models=("fake-a",), batch_sizes=(1, 2), decode="both")
    suite = pyperf.BenchmarkSuite.load(str(js_a))
    names = set(suite.get_benchmark_names())
    assert "fake-a/bs2/decode-off/float32/eager" in names and f"{DECODER_ID}/bs1/decode-only/float32/eager" in names
    df = read_run(out_a)
    batch = df[df.metric == results.MS_PER_BATCH].set_index(["model", "batch_size", "decode"])
    for bench in suite.get_benchmarks():
        (pyrun,) = bench.get_runs()
        meta = bench.get_metadata()
        row = batch.loc[(meta["model"], meta["batch_size"], meta["decode"])]
        assert bench.get_nvalue() == row.n
        assert len(pyrun.warmups) == 1  # the warm-up call, kept apart
        assert bench.median() * 1e3 == pytest.approx(row.value)
        assert meta["nfebench_run_id"] == df.run_id.iloc[0]
    cmp = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", str(js_a), str(js_b)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stderr


def test_out_of_memory_is_a_row_and_the_sweep_goes_on(tmp_path, fake_models):
    res, out, js = run(tmp_path, models=("fake-oom", "fake-huge", "fake-a"), batch_sizes=(1, 2, 4), decode="off")
    df = read_run(out)
    oom = df[df.status == results.OOM]
    assert list(zip(oom.model, oom.batch_size)) == [("fake-oom", 2), ("fake-oom", 4), ("fake-huge", 1)]
    assert set(oom.metric) == {results.MS_PER_BATCH} and oom.value.isna().all()
    assert oom.notes.str.contains("out of memory").all()
    assert set(ok(df).groupby("model").batch_size.unique().map(tuple)) == {(1,), (1, 2, 4)}
    assert res.errors == []


def test_a_failing_point_is_an_error_row_and_reported(tmp_path, fake_models):
    res, out, _ = run(tmp_path, models=("fake-fail", "fake-a"), batch_sizes=(1, 2), decode="off")
    df = read_run(out)
    err = df[df.status == results.ERROR]
    assert list(err.batch_size) == [2] and err.notes.iloc[0] == "RuntimeError: fake failure"
    assert len(res.errors) == 1 and "fake-fail bs=2" in res.errors[0]
    assert ((ok(df).model == "fake-a") & (df.metric == results.MS_PER_BATCH)).sum() == 2  # the next model ran


def test_interrupt_keeps_finished_points_in_whole_files(tmp_path, fake_models):
    out, js = tmp_path / "run.csv", tmp_path / "run.pyperf.json"
    config = SweepConfig(**FAST, models=("fake-a", "fake-interrupt", "fake-b"), batch_sizes=(1, 2))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, out, js, progress=False)
    df = read_run(out)
    assert set(zip(df.model, df.batch_size)) == {("fake-a", 1), ("fake-a", 2), ("fake-interrupt", 1)}
    assert len(pyperf.BenchmarkSuite.load(str(js)).get_benchmarks()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.csv", "run.pyperf.json"]  # no temporary files


def test_runs_are_never_overwritten(tmp_path, fake_models):
    (tmp_path / "run.csv").write_text("precious")
    with pytest.raises(InputError, match="already exists"):
        run(tmp_path, models=("fake-a",))
    assert (tmp_path / "run.csv").read_text() == "precious"


@pytest.mark.parametrize("fields, message", [
    (dict(batch_sizes=(0,)), "positive"),
    (dict(batch_sizes=(4, -1)), "positive"),
    (dict(batch_sizes=(1, 1)), "twice"),
    (dict(device="tpu"), "unknown device 'tpu'"),
    (dict(dtype="float64"), "unknown dtype"),
    (dict(decode="maybe"), "unknown decode"),
    (dict(models=("fake-zz",)), "unknown model id"),
    (dict(compile="torch", warmup=0), "compilation is not timed"),
    (dict(repeats=0), "repeats"),
    (dict(max_time=0.0), "max-time"),
])
def test_bad_settings_are_input_errors(fields, message, fake_models):
    with pytest.raises(InputError, match=message):
        validate(SweepConfig(**{**FAST, "models": ("fake-a",), **fields}))


def test_cuda_asked_for_but_absent(monkeypatch, fake_models):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="CUDA was asked for"):
        validate(SweepConfig(models=("fake-a",), device="cuda"))


def test_presets_and_overrides():
    cfg = with_preset("cpu", batch_sizes=(8,), repeats=None)
    assert cfg.batch_sizes == (8,) and cfg.repeats == PRESETS["cpu"]["repeats"] and cfg.device == "cpu"
    gpu = with_preset("gpu")
    assert gpu.device == "cuda" and gpu.dtype == "bfloat16" and gpu.compile == "both" and gpu.decode == "both"
    assert gpu.batch_sizes[0] == 1 and gpu.batch_sizes[-1] == 256 and gpu.warmup >= 1
    with pytest.raises(InputError, match="unknown preset"):
        with_preset("tpu-pod")


def test_plan_times_the_decoder_once_per_batch_size_and_compile_mode(fake_models):
    from adapters import model_info

    models = ("fake-pixel", "fake-a", "fake-b")
    infos = {m: model_info(m) for m in models}
    points = plan(SweepConfig(models=models, batch_sizes=(1, 4), decode="on", compile="both"), infos)
    decoder = [p for p in points if p.part == "only"]
    assert decoder == [Point("fake-a", c, bs, "only") for c in (False, True) for bs in (1, 4)]
    assert len(points) == 2 * 3 * 2 + 4
    off = plan(SweepConfig(models=models, batch_sizes=(1,), decode="off"), infos)
    assert {p.part for p in off} == {"off"}


def test_each_decoder_gets_its_own_decoder_alone_rows(tmp_path, register_fake, monkeypatch):
    """A latent family that decodes with another decoder than the SD-VAE: its decoder-alone points
    are planned apart from the SD-VAE's, and its rows carry the name, parameters and FLOPs its
    spec's `DecoderInfo` gives; its end-to-end FLOPs count that decoder too."""
    from adapters import model_info
    from adapters.api.sampler import DecoderInfo
    from harness.timing import torch_runner

    other = DecoderInfo("fake-vavae", 123, 1000.0)
    register_fake("fake-c", decoder=other)
    models = ("fake-a", "fake-pixel", "fake-b", "fake-c")
    points = plan(SweepConfig(models=models, batch_sizes=(1,), decode="on"), {m: model_info(m) for m in models})
    assert [p for p in points if p.part == "only"] == [Point("fake-a", False, 1, "only"),
                                                        Point("fake-c", False, 1, "only")]
    monkeypatch.setattr(torch_runner, "peak_flops", lambda name, dtype, tf32=False: 1e12)  # MFU rows name their FLOPs
    res, out, js = run(tmp_path, models=("fake-a", "fake-c"), batch_sizes=(2,), decode="on")
    assert res.errors == []
    df = read_run(out)
    mfu = rows_of(df, results.MFU).set_index(["model", "decode"])
    flops = {k: json.loads(c)["flops_per_batch"] for k, c in mfu.config.items()}
    generator = 2 * 16 * 64  # the fake's FLOPs per image
    area = (64 / 256) ** 2  # the fakes decode to 64 px
    assert flops[(DECODER_ID, "only")] == pytest.approx(2 * 622.2e9 * area)
    assert flops[("fake-vavae", "only")] == pytest.approx(2 * 1000e9 * area)
    assert flops[("fake-c", "on")] == pytest.approx(2 * (generator + 1000e9 * area))
    decoder_rows = rows_of(df, results.MS_PER_BATCH, decode="only").set_index("model")
    assert decoder_rows.loc["fake-vavae", "family"] == "fake-vavae"
    assert decoder_rows.params.astype(int).to_dict() == {DECODER_ID: 49_490_199, "fake-vavae": 123}
    assert {json.loads(c)["decoder_of"] for c in decoder_rows.config} == {"fake-a", "fake-c"}
    names = set(pyperf.BenchmarkSuite.load(str(js)).get_benchmark_names())
    assert {f"{DECODER_ID}/bs2/decode-only/float32/eager", "fake-vavae/bs2/decode-only/float32/eager"} <= names


def test_compile_wraps_the_network(tmp_path, fake_models):
    res, out, _ = run(tmp_path, models=("fake-a",), batch_sizes=(2,), compile="torch", compile_backend="eager")
    df = ok(read_run(out))
    assert set(df.compiled) == {True} and len(df) > 0
    assert json.loads(df[df.metric == results.MS_PER_BATCH].config.iloc[0])["compiled"] == "net"
    # compiled is not its reference (eager): checked, same samples, but random weights stay unverified
    gate = df[df.metric.isin([results.MAX_ABS_DEVIATION, results.MEAN_ABS_DEVIATION])]
    assert len(gate) == 2 and (gate.value == 0).all() and set(gate.quality) == {results.UNVERIFIED}

    from adapters import load_sampler

    sampler = load_sampler("fake-a")
    assert compile_sampler(sampler, decoder=True, backend="eager") == "net"  # the fake has no SD-VAE
    assert sampler.net._compiled_call_impl is not None  # nn.Module.compile's hook


def test_cli_bench_end_to_end_and_exit_codes(tmp_path, fake_models, capsys, monkeypatch):
    from harness.cli import main

    out = tmp_path / "cli.csv"
    argv = ["bench", "--models", "fake-a", "--batch-sizes", "1,2", "--decode", "both", "--device", "cpu",
            "--warmup", "0", "--repeats", "2", "--no-calibration", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "fake-a" in printed and "speed-up" in printed and str(out) in printed
    assert (tmp_path / "cli.pyperf.json").is_file() and len(read_run(out)) > 0
    assert main(argv[:4] + ["0,2"] + argv[5:-1] + [str(tmp_path / "bad.csv")]) == 2  # batch size 0
    assert main(["bench", "--models", "fake-fail", "--batch-sizes", "2", "--device", "cpu", "--no-calibration",
                 "--no-progress", "--out", str(tmp_path / "fail.csv")]) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # (--models: the fake registry of this test has no B/2 ids)
    assert main(["bench", "--preset", "gpu", "--models", "fake-a", "--out", str(tmp_path / "gpu.csv")]) == 2
    assert "CUDA was asked for" in capsys.readouterr().err
    assert not (tmp_path / "gpu.csv").exists()


# --- statistics, pairs and floors on the fake clock ---------------------------------------

def rows_of(df, metric, **where):
    sel = df[(df.metric == metric) & (df.status == results.OK)]
    for col, value in where.items():
        sel = sel[sel[col].astype(str) == str(value)]
    return sel


def test_pairs_are_timed_in_alternating_rounds_and_give_speedup_rows(tmp_path, fake_pair, fake_clock):
    res, out, js = run(tmp_path, models=("fake-fast", "fake-solo", "fake-slow"), batch_sizes=(1, 4), decode="both",
                       repeats=20, max_time=10.0)
    assert res.errors == []
    df = read_run(out)
    speed = rows_of(df, results.SPEEDUP)
    has_bs = speed.batch_size.astype(str) != ""
    per_bs = speed[has_bs]
    assert sorted(zip(per_bs.batch_size.astype(int), per_bs.decode)) == [(1, "off"), (1, "on"), (4, "off"), (4, "on")]
    assert set(speed.model) == {"fake-fast"} and {json.loads(c)["teacher"] for c in speed.config} == {"fake-slow"}
    expected = {"off": 60.0 / 2.0, "on": (60.0 + 3.0) / (2.0 + 3.0)}  # the fake models' costs per image
    for _, r in speed.iterrows():
        assert r.value == pytest.approx(expected[r.decode])
        assert r.ci_low == pytest.approx(r.value) and r.ci_high == pytest.approx(r.value)  # no noise: no width
        assert str(r.stable) == "True" and r.n == 5  # constant times: the interval is met at the fifth round
    # the model's own rows come from the same calls: as many as the pair's rounds, and no others
    for model, ms in (("fake-fast", 2.0), ("fake-slow", 60.0)):
        own = rows_of(df, results.MS_PER_IMAGE, model=model, decode="off", batch_size=4)
        assert own.value.iloc[0] == pytest.approx(ms) and own.n.iloc[0] == 5
    suite = pyperf.BenchmarkSuite.load(str(js))
    assert suite.get_benchmark("fake-fast/bs4/decode-off/float32/eager").get_nvalue() == 5
    # one row at each model's best-throughput batch size per part, unpaired
    best = speed[~has_bs]
    assert sorted(best.decode) == ["off", "on"]
    for c in best.config:
        c = json.loads(c)
        assert (c["at"], c["pairing"]) == ("best throughput", "unpaired") and c["batch_size"] in (1, 4)
    assert best.notes.str.contains("unpaired bootstrap").all()
    # the teacher without its fast model, and a model with no teacher, get no speed-up rows
    assert not (speed.model == "fake-solo").any()


def test_speedup_interval_on_noisy_fake_timings(tmp_path, register_fake, fake_clock, monkeypatch):
    from harness import pairs
    from harness.timing.stats import ratio_interval

    register_fake("fake-fast", ms_per_image=2.0, noise=0.1)
    register_fake("fake-slow", ms_per_image=60.0, noise=0.1)
    monkeypatch.setattr(pairs, "PAIRS", (("fake-fast", "fake-slow"),))
    res, out, js = run(tmp_path, models=("fake-fast", "fake-slow"), batch_sizes=(2,), repeats=40, max_time=1.0)
    df = read_run(out)
    speed = rows_of(df, results.SPEEDUP, batch_size=2).iloc[0]
    suite = pyperf.BenchmarkSuite.load(str(js))
    f_values = suite.get_benchmark("fake-fast/bs2/decode-off/float32/eager").get_values()
    s_values = suite.get_benchmark("fake-slow/bs2/decode-off/float32/eager").get_values()
    # The pair's rounds are the first speed.n calls of each (each member may go on alone until its
    # own interval is met): the ratio and its interval come from those rounds, paired.
    assert speed.n > 5 and len(f_values) >= speed.n and len(s_values) >= speed.n  # noise: more than the minimum
    n = int(speed.n)
    ratio, low, high = ratio_interval(s_values[:n], f_values[:n], paired=True)
    assert speed.value == pytest.approx(ratio)
    assert (speed.ci_low, speed.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert low < 30.0 < high and speed.ci_low < speed.value < speed.ci_high


def test_stable_is_false_when_noise_is_injected(tmp_path, register_fake, fake_clock):
    from harness.timing.summary import timing_table

    register_fake("fake-quiet", ms_per_image=50.0, noise=0.005)
    register_fake("fake-noisy", ms_per_image=50.0, noise=0.5)
    res, out, _ = run(tmp_path, models=("fake-quiet", "fake-noisy"), batch_sizes=(1,), repeats=50, max_time=0.5)
    df = read_run(out)
    quiet = rows_of(df, results.MS_PER_IMAGE, model="fake-quiet").iloc[0]
    noisy = rows_of(df, results.MS_PER_IMAGE, model="fake-noisy").iloc[0]
    assert str(quiet.stable) == "True" and quiet.n == 5 and quiet.notes == ""
    assert str(noisy.stable) == "False" and noisy.n > 5 and "unstable: half-width" in noisy.notes
    assert "0.5 s budget" in noisy.notes
    config = json.loads(noisy.config)
    assert config["stop"] == "budget spent" and config["cv"] > 0.2 and config["p50"] <= config["p90"] <= config["p99"]
    assert noisy.ci_low < noisy.value < noisy.ci_high
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(timing_table(res.rows))
    text = console.export_text()
    noisy_line = next(line for line in text.splitlines() if "fake-noisy" in line)
    assert f"unstable: CV {100 * config['cv']:.0f}%, n {noisy.n}" in noisy_line
    assert "unstable" not in next(line for line in text.splitlines() if "fake-quiet" in line)


def test_a_call_over_the_budget_is_said_in_the_notes(tmp_path, register_fake, fake_clock):
    register_fake("fake-long", ms_per_image=4000.0)
    res, out, _ = run(tmp_path, models=("fake-long",), batch_sizes=(1,), repeats=20, max_time=3.0)
    row = rows_of(read_run(out), results.MS_PER_BATCH).iloc[0]
    assert row.n == 1 and row.notes == "one call (4 s) exceeds the 3 s budget: n 1, no interval"
    assert str(row.stable) == "False" and math.isnan(row.ci_low)


def test_fraction_of_the_measured_matmul_peak(tmp_path, fake_models):
    res, out, js = run(tmp_path, models=("fake-a",), batch_sizes=(2,), calibrate=True)
    df = read_run(out)
    calib_row = df[df.metric == results.CALIBRATION_MS].iloc[0]  # the start's: the rows are a fraction of it
    calib = json.loads(calib_row.config)
    fastest = min(pyperf.BenchmarkSuite.load(str(js)).get_benchmark("calibration/start").get_values())
    assert calib["flops"] == 2 * 512**3 * 40 and calib["peak_flop_per_s"] == pytest.approx(calib["flops"] / fastest)
    frac = rows_of(df, results.FRAC_MATMUL_PEAK).iloc[0]
    config = json.loads(frac.config)
    assert config["matmul_peak_flops"] == pytest.approx(calib["peak_flop_per_s"])
    if str(calib_row.stable) == "False":  # a busy machine: the fractions say their peak is unsure
        assert str(frac.stable) == "False" and "matmul peak itself is unsure" in frac.notes
    per_batch_s = rows_of(df, results.MS_PER_BATCH).value.iloc[0] / 1e3
    assert frac.value == pytest.approx(config["flops_per_batch"] / per_batch_s / config["matmul_peak_flops"], rel=1e-6)
    assert config["flops_per_batch"] == pytest.approx(2 * 2 * 16 * 64)  # bs x the fake's FLOPs per image


def test_decode_batch_sizes_limit_the_decoding_points(fake_models):
    from adapters import model_info

    infos = {m: model_info(m) for m in ("fake-a", "fake-b")}
    points = plan(SweepConfig(models=("fake-a", "fake-b"), batch_sizes=(1, 4), decode="both", decode_batch_sizes=(1,)),
                  infos)
    assert {(p.batch_size, p.part) for p in points} == {(1, "off"), (4, "off"), (1, "on"), (1, "only")}
    with pytest.raises(InputError, match="decode-batch-sizes"):
        validate(SweepConfig(**{**FAST, "models": ("fake-a",), "batch_sizes": (1, 4), "decode_batch_sizes": (2,)}))


def test_pair_members_are_built_and_timed_together(fake_pair):
    from adapters import model_info
    from harness.timing.sweep import groups

    models = ("fake-solo", "fake-slow", "fake-a", "fake-fast")
    assert groups(models) == [("fake-solo",), ("fake-slow", "fake-fast"), ("fake-a",)]
    points = plan(SweepConfig(models=models, batch_sizes=(1,), decode="off"), {m: model_info(m) for m in models})
    assert [p.model for p in points] == ["fake-solo", "fake-slow", "fake-fast", "fake-a"]


@pytest.mark.parametrize("fields, message", [
    (dict(ci_target=0.0), "ci-target"), (dict(ci_target=1.0), "ci-target"), (dict(ci_target=-0.1), "ci-target"),
    (dict(max_time=-1.0), "max-time"), (dict(repeats=-2), "repeats"),
])
def test_bad_statistics_settings_are_input_errors(fields, message, fake_models):
    with pytest.raises(InputError, match=message):
        validate(SweepConfig(**{**FAST, "models": ("fake-a",), **fields}))


def test_out_in_a_folder_that_does_not_exist_is_refused(tmp_path, fake_models):
    config = SweepConfig(**FAST, models=("fake-a",))
    with pytest.raises(InputError, match="does not exist"):
        run_sweep(config, tmp_path / "no" / "such" / "run.csv", None, progress=False)
    with pytest.raises(InputError, match="--pyperf-json"):
        run_sweep(config, tmp_path / "run.csv", tmp_path / "absent" / "run.pyperf.json", progress=False)
    assert list(tmp_path.iterdir()) == []
