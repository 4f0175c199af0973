"""The mini track: small models really trained on the digits, measured by the same harness.

The live tests train the reduced ``ci`` budget, the one the CI gate also checks, into a cache
of their own, and hold the trained models to what the issue expects of them;
`test_the_committed_full_run_*` hold the committed run files of the full schedule to the
same expectations plus the schedule one (more steps never worse).
"""

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from adapters import load_sampler
from adapters.api.seeding import sample_labels, sample_noise
from harness import leaderboard
from harness.datasets import load_digits_split
from harness.results import FID, MS_PER_IMAGE, SPEEDUP, read_run
from harness.settings import label
from harness.track import (
    BASELINE,
    BUDGETS,
    HALF,
    MODELS,
    QUICK_GRID,
    RANDOM,
    STUDENT,
    TEACHER,
    TRAINED,
    Budget,
    ensure_trained,
    gs_jacobi_setting,
    quick,
    run_track,
    teacher_settings,
)

# The expectations, stated once (README, mini track): a trained model's FID is at most
# RANDOM_FACTOR times its random-weight architecture's; the student's at most STUDENT_FACTOR
# times its teacher's while at least MIN_SPEEDUP times faster per image (CPU; batch 1 live,
# batch 64 in the committed bench file).
RANDOM_FACTOR = 0.5
STUDENT_FACTOR = 2.0
MIN_SPEEDUP = 5.0
RUNS = Path(__file__).resolve().parents[2] / "results" / "runs"


@pytest.fixture(scope="session")
def ci_track(tmp_path_factory):
    # A cache of its own: training is not invariant to torch's thread count (which the xdist workers
    # share out), so the CI gate trains its own checkpoints with a lone process's threads.
    return run_track(BUDGETS["ci"], runs_dir=tmp_path_factory.mktemp("runs"),
                     cache=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.mark.slow
def test_every_trained_model_is_far_below_its_random_weights(ci_track):
    for m in MODELS:
        assert ci_track.fids[m] < RANDOM_FACTOR * ci_track.fids[f"{m}@{RANDOM}"], (m, ci_track.fids)


@pytest.mark.slow
def test_the_student_is_within_the_stated_factor_of_its_teacher(ci_track):
    assert ci_track.fids[STUDENT] <= STUDENT_FACTOR * ci_track.fids[TEACHER], ci_track.fids


@pytest.mark.slow
def test_the_student_is_many_times_faster_per_image(ci_track):
    # Batch 1 (latency), best of 5 calls: the sequential teacher's margin is widest there
    # (10x in the committed run), so a busy shared CPU does not make this flaky.
    noise, labels = sample_noise(0, range(1), (3, 8, 8)), sample_labels(0, range(1), 10)

    def best_seconds(model):
        c = next(c for c in ci_track.checkpoints if c.model == model and c.role == TRAINED)
        sampler = load_sampler(model, checkpoint=str(c.path))
        times = []
        sampler.generate(noise, labels)  # warm-up
        for _ in range(5):
            t0 = time.perf_counter()
            sampler.generate(noise, labels)
            times.append(time.perf_counter() - t0)
        return min(times)

    assert best_seconds(TEACHER) >= MIN_SPEEDUP * best_seconds(STUDENT)


@pytest.mark.slow
def test_run_files_name_the_weights_and_the_mini_table_never_ranks_random_ones(ci_track):
    manifest = json.loads(ci_track.manifest.read_text())
    trained = {c["model"]: c["weights"] for c in manifest["checkpoints"] if c["role"] == TRAINED}
    rows = read_run(ci_track.run_files[TRAINED])
    assert set(rows["model"]) == set(MODELS)
    assert all(rows["weights"] == rows["model"].map(trained))
    assert set(read_run(ci_track.run_files[RANDOM])["weights"]) == {"random-init"}
    runs = ci_track.manifest.parent
    board = leaderboard.build_mini(leaderboard.read_runs(runs, mini=True), leaderboard.read_manifests(runs))
    by_model = {e["model"]: e for e in board}
    for m in MODELS:
        assert by_model[m]["fid"] == pytest.approx(ci_track.fids[m])
        assert by_model[m]["fid_random"] == pytest.approx(ci_track.fids[f"{m}@{RANDOM}"])
        assert by_model[m]["train_steps"] == BUDGETS["ci"].steps[m]
    ranks = sorted(by_model.values(), key=lambda e: e["fid_rank"])
    assert [e["fid"] for e in ranks] == sorted(ci_track.fids[m] for m in MODELS)


def _sweep_settings(path, trained_weights):
    """setting label -> its rows, of a sweep file whose every timed or measured row is of trained weights."""
    rows = [r for r in read_run(path).to_dict("records") if r["model"] != "calibration"]
    assert {r["weights"] for r in rows} <= set(trained_weights)  # trained checkpoints, never random weights
    out = {}
    for r in rows:
        out.setdefault(label(r["model"], json.loads(r["config"])["options"]), []).append(r)
    return out


def _check_swept(settings, n, batch_sizes, fids):
    """Every setting has its FID of N samples with an interval and a time per batch size, every one
    but its model's baseline a ratio to it; the default settings' FIDs are the track's eval FIDs
    (same weights, N, seed and per-index noise: the sweep's quality pass is the eval's path)."""
    for name, rows in settings.items():
        (fid,) = [r for r in rows if r["metric"] == FID]
        assert fid["n"] == n and fid["ci_low"] <= fid["value"] <= fid["ci_high"]
        assert {int(r["batch_size"]) for r in rows if r["metric"] == MS_PER_IMAGE} == set(batch_sizes)
        baseline = json.loads(rows[0]["config"])["sweep"]["baseline"]
        ratios = [r for r in rows if r["metric"] == SPEEDUP]
        assert (len(ratios) == 0) == (name in (rows[0]["model"], f"{rows[0]['model']}[{baseline}]")), name
    defaults = {BASELINE: f"{BASELINE}[num_steps=1]", STUDENT: f"{STUDENT}[guidance=0.0]"}
    for model, name in defaults.items():
        (fid,) = [r for r in settings[name] if r["metric"] == FID]
        assert fid["value"] == pytest.approx(fids[model], rel=1e-6), (name, fid["value"], fids[model])


@pytest.mark.slow
def test_the_ci_sweep_measures_every_quick_setting_of_the_trained_models(ci_track):
    manifest = json.loads(ci_track.manifest.read_text())
    trained = [c["weights"] for c in manifest["checkpoints"] if c["role"] == TRAINED]
    settings = _sweep_settings(ci_track.sweep_file, trained)
    assert set(settings) == {f"{BASELINE}[num_steps=1]", f"{BASELINE}[num_steps=2]", f"{STUDENT}[guidance=0.0]",
                             f"{STUDENT}[guidance=1.0]"}
    assert manifest["sweep"]["grid"] == list(QUICK_GRID) and manifest["sweep_file"] == ci_track.sweep_file.name
    _check_swept(settings, BUDGETS["ci"].num_samples, {1}, ci_track.fids)


def test_quick_sweeps_fewer_settings_of_the_same_budget():
    full = BUDGETS["full"]
    assert quick(full).sweep.grid == QUICK_GRID and quick(full).steps == full.steps
    assert len(QUICK_GRID) < len(full.sweep.grid)


def test_a_corrupt_cached_checkpoint_is_retrained_never_used(tmp_path):
    split = load_digits_split()
    budget = Budget("tiny", steps={BASELINE: 6}, batch_size=8, save_every=3)
    first = ensure_trained(BASELINE, split, budget, tmp_path, progress=False)
    assert [c.role for c in first] == [TRAINED, HALF]
    messages = []
    again = ensure_trained(BASELINE, split, budget, tmp_path, progress=False, log=messages.append)
    assert messages == [] and [c.weights for c in again] == [c.weights for c in first]  # cached, verified
    path = first[0].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    retrained = ensure_trained(BASELINE, split, budget, tmp_path, progress=False, log=messages.append)
    assert "not using the cached checkpoint" in messages[0] and "is corrupt" in messages[0]
    # Seeded training: the retrained weights are the ones first trained, byte for byte.
    assert retrained[0].weights == first[0].weights
    longer = ensure_trained(BASELINE, split, replace(budget, steps={BASELINE: 8}), tmp_path, progress=False,
                            log=messages.append)
    assert longer[0].path != path and longer[0].steps == 8



def test_a_checkpoint_trained_with_other_threads_is_retrained(tmp_path):
    split = load_digits_split()
    budget = Budget("tiny", steps={BASELINE: 2}, batch_size=8, save_every=1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ensure_trained(BASELINE, split, budget, tmp_path, progress=False)
        torch.set_num_threads(2)
        messages = []
        ensure_trained(BASELINE, split, budget, tmp_path, progress=False, log=messages.append)
    finally:
        torch.set_num_threads(threads)
    assert "not using the cached checkpoint" in messages[0] and "threads" in messages[0], messages

def _committed_full_run():
    manifests = sorted(RUNS.glob("mini-full-*.json"))
    assert manifests, f"no committed run of `nfebench track mini` in {RUNS}"
    manifest = json.loads(manifests[-1].read_text())
    return manifest, manifests[-1].parent


def test_the_committed_full_run_meets_the_expectations():
    manifest, folder = _committed_full_run()
    fids = manifest["fids"]
    for m in MODELS:
        assert fids[m] < RANDOM_FACTOR * fids[f"{m}@{RANDOM}"], (m, fids)
        # The schedule: the fully trained model is no worse than its half-way snapshot.
        assert fids[m] <= fids[f"{m}@{HALF}"], (m, fids)
    assert fids[STUDENT] <= STUDENT_FACTOR * fids[TEACHER], fids
    bench = read_run(folder / manifest["bench_file"])
    batched = bench["batch_size"].astype(str).isin(["64", "64.0"])
    default = bench["config"].map(lambda c: not json.loads(c).get("options"))  # each model at its defaults
    ms = bench[(bench["metric"] == MS_PER_IMAGE) & batched & default].set_index("model")["value"].astype(float)
    assert ms[TEACHER] >= MIN_SPEEDUP * ms[STUDENT], ms.to_dict()
    # The FIDs in the manifest are the ones in the committed run files.
    for role, name in manifest["run_files"].items():
        rows = read_run(folder / name)
        for r in rows[rows["metric"] == FID].to_dict("records"):
            key = r["model"] if role == TRAINED else f"{r['model']}@{role}"
            assert fids[key] == pytest.approx(r["value"])


def test_the_committed_full_run_times_trained_settings_each_with_its_fid():
    manifest, folder = _committed_full_run()
    if manifest["format"] < 2:
        pytest.skip("the committed run predates manifest format 2 (trained, quality-gated bench settings)")
    trained = {c["model"]: c["weights"] for c in manifest["checkpoints"] if c["role"] == TRAINED}
    f32, bf16 = (read_run(folder / manifest[k]) for k in ("bench_file", "bench_bf16_file"))
    for df in (f32, bf16):
        timed = df[(df["metric"] == MS_PER_IMAGE) & (df["model"] != "calibration")]
        assert set(timed["weights"]) == set(trained.values())  # trained checkpoints, never random weights
        assert set(timed["quality"]) <= {"reference", "verified", "failed"}
    # the teacher: sequential, Jacobi at three tolerances and GS-Jacobi, at batch 1 and 64, with
    # iterations; each setting has a FID of N samples on the same weights
    options = lambda c: json.dumps(json.loads(c).get("options") or {}, sort_keys=True)  # noqa: E731
    teacher = f32[(f32["model"] == TEACHER) & (f32["metric"] == MS_PER_IMAGE)]
    settings = set(teacher["config"].map(options))
    assert len(settings) == 5 and teacher.groupby(teacher["config"].map(options)).size().eq(2).all()
    for c in teacher["config"]:
        c = json.loads(c)
        assert {"iterations_mean", "iterations_max", "iterations_per_block"} <= set(c)
        if not c["options"]:
            assert c["iterations_per_block"] == [15] * 4  # sequential: T - 1 per block
    fids = f32[(f32["metric"] == FID) & (f32["model"] == TEACHER)]
    assert set(fids["config"].map(options)) == settings and set(fids["n"].astype(int)) == {200}
    # bf16 of every trained model has its FID beside the float32 one
    assert set(bf16[bf16["metric"] == FID]["model"]) == set(MODELS)
    assert {k.rsplit("@", 1)[1] for k in manifest["setting_fids"]} == {"float32", "bfloat16"}


@pytest.mark.slow
def test_the_teacher_settings_parse_and_gs_jacobi_segments_a_block(ci_track):
    from harness.settings import parse_option_sets
    from harness.track import _options_arg

    teacher = next(c for c in ci_track.checkpoints if c.model == TEACHER and c.role == TRAINED)
    gs, record = gs_jacobi_setting(teacher, load_digits_split())
    assert gs["decoding"] == "gs-jacobi" and max(gs["gs_segments"]) == 8 and len(gs["gs_segments"]) == 4
    assert len(record["crm"]) == 4 and record["source"].startswith("gs_jacobi_plan")
    if "ranked no block tough" in record["source"]:  # the fallback cuts the block of the highest CRM
        assert gs["gs_segments"].index(8) == record["crm"].index(max(record["crm"]))
    settings = teacher_settings(gs)
    parsed = parse_option_sets([_options_arg(TEACHER, o) for o in settings], (TEACHER,))[TEACHER]
    assert list(parsed) == settings  # what the track passes to nfebench bench is what it meant


def test_the_committed_full_run_sweeps_the_trained_models_settings():
    manifest, folder = _committed_full_run()
    if manifest["format"] < 3:
        pytest.skip("the committed run predates manifest format 3 (the sweep of the trained models' settings)")
    trained = [c["weights"] for c in manifest["checkpoints"] if c["role"] == TRAINED]
    settings = _sweep_settings(folder / manifest["sweep_file"], trained)
    expected = ({f"{BASELINE}[num_steps={k}]" for k in (1, 2, 4, 8)}
                | {f"{STUDENT}[guidance={g}]" for g in ("0.0", "0.5", "1.0", "2.0")}
                | {f"{TEACHER}[{d}guidance={g}]" for d in ("", "decoding=jacobi,") for g in ("0.0", "1.0")})
    assert set(settings) == expected
    _check_swept(settings, BUDGETS["full"].num_samples, {1, 64}, manifest["fids"])
