"""`nfebench sweep` end to end on tiny models: its rows follow the sweep spec, every setting sees
the same noise and labels, a rerun reports a finished sweep bit for bit without work, another
grid adds only its new settings, and each bad input exits 2 with nothing written.

One sweep (`finished`, module scope) of rf-mini at 1 and 2 steps and biflow-mini at guidance 0
and 1, N = 4, random weights; every call of ``generate`` is recorded (`recorder`).
"""

import json
import shutil

import pytest
import torch

from adapters.api.seeding import sample_labels, sample_noise
from adapters.base import TorchSampler
from harness.cli import main
from harness.results import (
    FEATURE_IMAGES_PER_S,
    FID,
    KID,
    MS_PER_IMAGE,
    SAMPLE_IMAGES_PER_S,
    SPEEDUP,
    read_run,
)

pytestmark = pytest.mark.slow
N, BATCH = 4, 2  # the tiny sweep's (conftest.py)
SETTINGS = {"rf-mini[num_steps=1]": ("rf-mini", {"num_steps": 1}), "rf-mini[num_steps=2]": ("rf-mini", {"num_steps": 2}),
            "biflow-mini[guidance=0.0]": ("biflow-mini", {"guidance": 0.0}),
            "biflow-mini[guidance=1.0]": ("biflow-mini", {"guidance": 1.0})}
BASELINES = {"rf-mini": "num_steps=1", "biflow-mini": "guidance=0.0"}


class Recorder:
    """Every ``TorchSampler.generate`` call: (model, guidance, options, noise, labels)."""

    def __init__(self):
        self.calls = []

    def __call__(self, original):
        def generate(sampler, noise, labels, *, guidance=None, **options):
            self.calls.append((sampler.info.name, guidance, dict(options), noise.detach().clone(),
                               None if labels is None else labels.clone()))
            return original(sampler, noise, labels, guidance=guidance, **options)

        return generate


@pytest.fixture(scope="module")
def recorder():
    rec = Recorder()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(TorchSampler, "generate", rec(TorchSampler.generate))
        yield rec


@pytest.fixture(scope="module")
def finished(tmp_path_factory, reference, recorder, tiny):
    assert (tiny.n, tiny.batch) == (N, BATCH)
    root = tmp_path_factory.mktemp("sweep")
    argv = tiny.argv(reference, root / "wd", root / "sweep.csv")
    assert main(argv) == 0
    calls = list(recorder.calls)
    recorder.calls.clear()
    return {"root": root, "argv": argv, "wd": root / "wd", "out": root / "sweep.csv", "calls": calls}


def config(r):
    return json.loads(r["config"]) if r["config"] else {}


def setting_of(r):
    from harness.settings import label

    return label(r["model"], config(r).get("options") or {})


def test_every_setting_has_the_rows_of_the_spec(finished):
    rows = read_run(finished["out"]).to_dict("records")  # held to the results schema
    (run_id,) = {r["run_id"] for r in rows}
    by_setting = {}
    for r in rows:
        by_setting.setdefault(setting_of(r), []).append(r)
    assert set(by_setting) == set(SETTINGS)
    for name, (model, options) in SETTINGS.items():
        mine = by_setting[name]
        baseline = SETTINGS[f"{model}[{BASELINES[model]}]"][1]
        assert all(config(r)["options"] == options for r in mine)
        assert all(config(r)["sweep"] == {"id": run_id, "baseline": BASELINES[model]} for r in mine)
        assert {FID, KID, SAMPLE_IMAGES_PER_S, FEATURE_IMAGES_PER_S, MS_PER_IMAGE} <= {r["metric"] for r in mine}
        for r in (r for r in mine if r["metric"] in (FID, KID)):
            # what nfebench eval writes: N, seed, the eval batch size, decode on, an interval
            assert (r["n"], r["seed"], r["batch_size"], r["decode"]) == (N, 0, BATCH, "on")
            assert r["ci_low"] <= r["value"] <= r["ci_high"]
            assert {"reference", "reference_n", "mode", "network"} <= set(config(r))
        # NFE of what ran: rf-mini's step count; biflow-mini's guidance is an input of its one pass
        assert {r["nfe"] for r in mine} == {options.get("num_steps", 1)}
        assert {str(r["guidance"]) for r in mine} == {str(options.get("guidance", ""))}
        ratio = [r for r in mine if r["metric"] == SPEEDUP]
        if options == baseline:
            assert ratio == []  # the baseline has no ratio to itself
        else:
            (ratio,) = ratio
            c = config(ratio)
            assert (c["basis"], c["teacher"], c["teacher_options"], ratio["model"]) == (
                "sweep baseline", model, baseline, model)
            assert ratio["ci_low"] <= ratio["value"] <= ratio["ci_high"]
        for metric in (SAMPLE_IMAGES_PER_S, FEATURE_IMAGES_PER_S):
            (cost,) = [r for r in mine if r["metric"] == metric]
            assert cost["value"] > 0 and cost["n"] > 0


def test_sample_i_starts_from_the_same_noise_and_label_under_every_setting(finished):
    passes = {}  # setting -> the quality pass's calls (batches of BATCH; the timings call with batch 1)
    for model, guidance, options, noise, labels in finished["calls"]:
        if noise.shape[0] == BATCH:
            passes.setdefault((model, guidance, json.dumps(options, sort_keys=True)), []).append((noise, labels))
    assert len(passes) == 4
    for calls in passes.values():
        assert len(calls) == N // BATCH
        for b, (noise, labels) in enumerate(calls):
            idx = range(b * BATCH, (b + 1) * BATCH)
            assert torch.equal(noise, sample_noise(0, idx, (3, 8, 8)))
            assert torch.equal(labels, sample_labels(0, idx, 10))
    first = next(iter(passes.values()))
    for calls in passes.values():
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(calls, first))


def test_a_rerun_reports_the_finished_sweep_bit_for_bit_without_work(finished, recorder, capsys):
    before = finished["out"].read_bytes()
    pyperf = finished["out"].with_name("sweep.pyperf.json").read_bytes()
    assert main(finished["argv"]) == 0
    assert recorder.calls == []  # nothing sampled or timed
    assert finished["out"].read_bytes() == before
    assert finished["out"].with_name("sweep.pyperf.json").read_bytes() == pyperf
    assert "adds 0 setting(s); 4 from earlier runs" in capsys.readouterr().err
    recorder.calls.clear()


def test_another_grid_adds_only_its_new_settings(finished, recorder, reference, tmp_path, capsys, tiny):
    wd = tmp_path / "wd"
    shutil.copytree(finished["wd"], wd)
    out = tmp_path / "extended.csv"
    argv = tiny.argv(reference, wd, out, grid=("rf-mini:num_steps=1,2,4", "biflow-mini:guidance=0,1"))
    assert main(argv) == 0
    assert "adds 1 setting(s): rf-mini[num_steps=4]; 4 from earlier runs" in capsys.readouterr().err
    old = finished["out"].read_text()
    new = out.read_text()
    assert new.startswith(old) and len(new) > len(old)  # every earlier row as it was, then the new setting's
    added = [r for r in read_run(out).to_dict("records")[len(read_run(finished["out"])):]]
    assert {setting_of(r) for r in added} == {"rf-mini[num_steps=4]"}
    assert any(r["metric"] == SPEEDUP for r in added)  # timed against the baseline again
    sampled = {json.dumps(o, sort_keys=True) for m, g, o, noise, _ in recorder.calls if noise.shape[0] == BATCH}
    timed = {json.dumps(o, sort_keys=True) for m, g, o, noise, _ in recorder.calls if noise.shape[0] == 1}
    assert sampled == {'{"num_steps": 4}'}  # only the new setting's quality pass
    assert timed == {'{"num_steps": 1}', '{"num_steps": 4}'}  # the new setting in rounds with its baseline
    recorder.calls.clear()


def _tree(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} \
        if path.exists() else None


@pytest.mark.parametrize("extra, grid, message", [
    ((), ("rf-mini:num_steps=",), "the axis num_steps has no values"),
    ((), ("rf-mini:decoding=jacobi",), "rf-mini has no axis decoding; its axes: num_steps, guidance"),
    (("--options", "rf-mini:num_steps=2"), ("rf-mini:num_steps=1,2",),
     r"the setting rf-mini[num_steps=2] is given twice (by --grid rf-mini:num_steps=1,2 and by --options "
     r"num_steps=2"),
    (("--max-settings", "2"), ("rf-mini:num_steps=1,2", "biflow-mini:guidance=0,1"),
     "the grid makes 4 settings (rf-mini 2, biflow-mini 2), more than --max-settings 2; pass --yes"),
])
def test_a_bad_grid_exits_2_with_nothing_written(reference, tmp_path, capsys, tiny, extra, grid, message):
    argv = tiny.argv(reference, tmp_path / "wd", tmp_path / "out.csv", *extra, grid=grid)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []


def test_the_grid_over_max_settings_runs_with_yes(reference, tmp_path, tiny):
    from harness.cli import build_parser
    from harness.commands.sweep import request_of
    from harness.sweep import plan_sweep

    argv = tiny.argv(reference, tmp_path / "wd", tmp_path / "out.csv", "--max-settings", "2", "--yes")
    plan = plan_sweep(request_of(build_parser("sweep").parse_args(argv)))  # checked, nothing run
    assert sum(len(s) for s in plan.settings.values()) == 4 and sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, message", [
    ({"seed": 1}, "seed: 0 there, 1 now"),
    ({"models": "rf-mini", "grid": ("rf-mini:num_steps=1,2",)},
     "models: ['rf-mini', 'biflow-mini'] there, ['rf-mini'] now"),
    ({"n": 6}, "num_samples: 4 there, 6 now"),
])
def test_a_work_dir_of_another_sweep_exits_2_and_is_left_as_it_was(finished, reference, tmp_path, capsys, tiny,
                                                                    change, message):
    before = _tree(finished["wd"])
    argv = tiny.argv(reference, finished["wd"], tmp_path / "other.csv", **change)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds a sweep of other settings" in err and message in err
    assert _tree(finished["wd"]) == before and not (tmp_path / "other.csv").exists()


def test_a_run_file_of_another_run_or_a_foreign_folder_is_refused(finished, reference, tmp_path, capsys, tiny):
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("not a sweep's\n")
    assert main(tiny.argv(reference, finished["wd"], foreign)) == 2
    assert "already exists and is not this sweep's" in capsys.readouterr().err
    assert foreign.read_text() == "not a sweep's\n"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(tiny.argv(reference, busy, tmp_path / "new.csv")) == 2
    assert "is not empty and holds no sweep" in capsys.readouterr().err
    assert _tree(busy) == {busy.joinpath("notes.txt").relative_to(busy): b"mine"}


def test_each_timing_process_is_calibrated_and_every_timing_is_a_fraction_of_its_peak(reference, tmp_path, tiny):
    import pyperf

    wd, out = tmp_path / "wd", tmp_path / "sweep.csv"

    def sweep(steps):
        argv = [a for a in tiny.argv(reference, wd, out, models="rf-mini", grid=(f"rf-mini:num_steps={steps}",))
                if a != "--no-calibration"]
        assert main(argv) == 0

    sweep("1")
    sweep("1,2")  # a second process times the new setting (with its baseline): a calibration of its own
    rows = read_run(out).to_dict("records")
    calibration = [r for r in rows if r["model"] == "calibration"]
    assert [json.loads(r["config"])["when"] for r in calibration] == ["start", "end", "start", "end"]
    assert all(json.loads(r["config"])["sweep"] == {"id": rows[0]["run_id"]} for r in calibration)
    fractions = {setting_of(r) for r in rows if r["metric"] == "frac_matmul_peak"}
    assert fractions == {"rf-mini[num_steps=1]", "rf-mini[num_steps=2]"}
    names = {b.get_name() for b in pyperf.BenchmarkSuite.load(str(out.with_name("sweep.pyperf.json"))).get_benchmarks()}
    assert {"calibration/start", "calibration/end", "calibration/start/2", "calibration/end/2"} <= names
    assert {n.split("/bs")[0] for n in names if "/bs" in n} == {"rf-mini[num_steps=1]", "rf-mini[num_steps=2]"}
