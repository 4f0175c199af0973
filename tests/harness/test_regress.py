import math

import pytest

from harness import regress
from harness.cli import main
from adapters.api.errors import InputError
from harness.results import (CALIBRATION_MS, FID, IMAGES_PER_S, IS, MS_PER_BATCH, MS_PER_IMAGE, OOM, PEAK_MEM_MB,
                             SPEEDUP, atomic_write, rows_to_csv)

PROVENANCE = {"schema_version": 1, "run_id": "r1", "created": "2026-11-25T12:00:00+00:00", "git_sha": "abc",
              "nfebench_version": "0.1.0", "versions": "torch=2"}
MACHINE = {"device": "cpu", "device_name": "Test CPU 2 cores", "backend": "torch", "dtype": "float32",
           "compiled": "none", "source": "measured", "status": "ok", "weights": "random-init"}
BASE_MS = {"rf-b2": 40.0, "biflow-b2": 45.0}  # ms per image at batch size 1


def bench_rows(slow=1.0, model_slow=None, calibration=True, rel_spread=0.02):
    """Rows of a synthetic bench run: every timing of model m multiplied by slow * model_slow[m],
    the calibration by `slow` (a machine that is `slow` times slower)."""
    model_slow = model_slow or {}
    rows = []
    if calibration:
        rows.append({**MACHINE, "model": "calibration", "metric": CALIBRATION_MS, "value": 200.0 * slow,
                     "spread": 2.0 * slow, "n": 10})
    for model, ms in BASE_MS.items():
        f = slow * model_slow.get(model, 1.0)
        for bs in (1, 8):
            for decode, extra in (("off", 0.0), ("on", 30.0)):
                per_image = (ms + extra) * f / (1 + 0.1 * (bs - 1))  # batching helps a little
                setting = {**MACHINE, "model": model, "nfe": 1, "batch_size": bs, "decode": decode, "n": 10}
                rows += [
                    {**setting, "metric": MS_PER_IMAGE, "value": per_image, "spread": rel_spread * per_image},
                    {**setting, "metric": MS_PER_BATCH, "value": per_image * bs, "spread": rel_spread * per_image * bs},
                    {**setting, "metric": IMAGES_PER_S, "value": 1000 / per_image,
                     "spread": rel_spread * 1000 / per_image},
                    {**setting, "metric": PEAK_MEM_MB, "value": 500.0 + 10 * bs, "spread": 0.0},
                ]
    return rows


def quality_rows(fid=12.5, is_=30.0):
    q = {**MACHINE, "model": "rf-b2", "nfe": 1, "batch_size": 16, "decode": "on", "seed": 0, "n": 256,
         "config": {"mode": "adm", "reference": "toy"}}
    return [{**q, "metric": FID, "value": fid}, {**q, "metric": IS, "value": is_, "spread": 0.5},
            {**q, "metric": "lpips", "value": 0.25}]


def write(path, rows, provenance=PROVENANCE):
    atomic_write(path, rows_to_csv({**provenance, **r} for r in rows))
    return str(path)


def run_cli(*args):
    return main(["regress", *map(str, args)])


def test_same_run_against_itself_is_clean(tmp_path, capsys):
    path = write(tmp_path / "a.csv", bench_rows() + quality_rows())
    report = regress.compare_files(path, path)
    assert report.regressions == []
    assert {c.verdict for c in report.changes} == {regress.SAME}
    assert len(report.changes) == 2 * 2 * 2 * 4 + 3  # models x batch sizes x decode x metrics + quality
    assert report.calibration_ratio == 1.0
    assert run_cli("--baseline", path, "--current", path) == 0
    assert "0 regressions" in capsys.readouterr().out


def test_two_times_slower_model_is_flagged(tmp_path, capsys):
    base = write(tmp_path / "base.csv", bench_rows())
    cur = write(tmp_path / "cur.csv", bench_rows(model_slow={"biflow-b2": 2.0}))
    report = regress.compare_files(base, cur)
    flagged = {(c.setting["model"], c.metric) for c in report.regressions}
    assert flagged == {("biflow-b2", MS_PER_IMAGE), ("biflow-b2", MS_PER_BATCH), ("biflow-b2", IMAGES_PER_S)}
    assert all(c.verdict == regress.SLOWER for c in report.regressions)
    assert len(report.regressions) == 3 * 4  # 3 speed metrics x (2 batch sizes x 2 decode)
    ms = next(c for c in report.regressions if c.metric == MS_PER_IMAGE)
    assert ms.relative == pytest.approx(1.0)  # +100%
    assert run_cli("--baseline", base, "--current", cur) == 1
    out = capsys.readouterr().out
    assert "slower" in out and "12 regressions" in out


def test_uniformly_slower_machine_is_clean_thanks_to_calibration(tmp_path):
    base = write(tmp_path / "base.csv", bench_rows())
    cur = write(tmp_path / "cur.csv", bench_rows(slow=1.3))
    report = regress.compare_files(base, cur)
    assert report.calibration_ratio == pytest.approx(1.3)
    assert report.regressions == []
    ms = [c for c in report.changes if c.metric == MS_PER_IMAGE]
    assert all(c.current == pytest.approx(1.3 * c.baseline) and c.adjusted == pytest.approx(c.baseline) for c in ms)
    # Control: the same drift without calibration rows is indistinguishable from slower code.
    base_raw = write(tmp_path / "base_raw.csv", bench_rows(calibration=False))
    cur_raw = write(tmp_path / "cur_raw.csv", bench_rows(slow=1.3, calibration=False))
    raw = regress.compare_files(base_raw, cur_raw)
    assert raw.calibration_ratio is None and "no calibration row" in raw.notes[-1]
    assert {c.metric for c in raw.regressions} == {MS_PER_IMAGE, MS_PER_BATCH, IMAGES_PER_S}


def test_timing_change_must_exceed_the_measured_spread(tmp_path):
    base_noisy = write(tmp_path / "bn.csv", bench_rows(rel_spread=0.15))
    cur_noisy = write(tmp_path / "cn.csv", bench_rows(model_slow={"rf-b2": 1.2}, rel_spread=0.15))
    # +20% exceeds the 10% tolerance but not 2 x sqrt(0.15^2 + 0.18^2) of the value: noise, not a regression.
    assert regress.compare_files(base_noisy, cur_noisy, time_rtol=0.1).regressions == []
    base = write(tmp_path / "b.csv", bench_rows(rel_spread=0.01))
    cur = write(tmp_path / "c.csv", bench_rows(model_slow={"rf-b2": 1.2}, rel_spread=0.01))
    assert {c.setting["model"] for c in regress.compare_files(base, cur, time_rtol=0.1).regressions} == {"rf-b2"}
    # ... and the tolerance: the same +20% passes when 25% is tolerated.
    assert regress.compare_files(base, cur, time_rtol=0.25).regressions == []


def test_timing_rows_pair_whatever_their_run_parameters(tmp_path):
    # bench writes repeats/threads/timer into `config`: they must not split a timing setting,
    # while a quality row's config (mode, reference) does.
    base = write(tmp_path / "b.csv", [{**r, "config": {"repeats": 10}} for r in bench_rows()] + quality_rows())
    cur_rows = [{**r, "config": {"repeats": 3}} for r in bench_rows()]
    cur_rows += [{**r, "config": {"mode": "clean", "reference": "toy"}} for r in quality_rows()]
    report = regress.compare_files(base, write(tmp_path / "c.csv", cur_rows))
    assert {c.verdict for c in report.changes if c.metric in regress.TIMING} == {regress.SAME}
    assert sorted((c.metric, c.verdict) for c in report.regressions) == [
        (FID, regress.MISSING), (IS, regress.MISSING), ("lpips", regress.MISSING)]


def test_peak_memory_growth_is_flagged_and_not_calibrated(tmp_path):
    base = write(tmp_path / "b.csv", bench_rows())
    grown = [{**r, "value": 2 * r["value"]} if r["metric"] == PEAK_MEM_MB and r["model"] == "rf-b2" else r
             for r in bench_rows(slow=1.3)]  # a slower machine does not excuse more memory
    report = regress.compare_files(base, write(tmp_path / "c.csv", grown))
    assert {(c.setting["model"], c.metric, c.verdict) for c in report.regressions} == {
        ("rf-b2", PEAK_MEM_MB, regress.MORE_MEMORY)}
    assert len(report.regressions) == 4


def test_faster_is_reported_but_never_fails(tmp_path):
    base = write(tmp_path / "b.csv", bench_rows())
    cur = write(tmp_path / "c.csv", bench_rows(model_slow={"rf-b2": 0.5}))
    report = regress.compare_files(base, cur)
    assert report.regressions == []
    assert {c.setting["model"] for c in report.changes if c.verdict == regress.FASTER} == {"rf-b2"}


@pytest.mark.parametrize("metric,new,note", [(FID, 13.0, "worse"), (FID, 12.0, "better"), (IS, 31.0, "better"),
                                              ("lpips", 0.5, "")])
def test_quality_change_beyond_tolerance_is_flagged(tmp_path, metric, new, note):
    base = write(tmp_path / "b.csv", quality_rows())
    changed = [{**r, "value": new} if r["metric"] == metric else r for r in quality_rows()]
    cur = write(tmp_path / "c.csv", changed)
    report = regress.compare_files(base, cur, metric_atol=0.1)
    assert [(c.metric, c.verdict, c.note) for c in report.regressions] == [(metric, regress.CHANGED, note)]
    # A tolerance wider than the change lets it pass.
    assert regress.compare_files(base, cur, metric_atol=1.5).regressions == []
    assert run_cli("--baseline", base, "--current", cur, "--metric-atol", "0.1") == 1


def test_setting_that_now_fails_or_disappears_is_a_regression(tmp_path):
    base_rows = bench_rows()
    cur_rows = [r for r in base_rows if not (r["model"] == "rf-b2" and r["batch_size"] == 8 and r["decode"] == "on")]
    cur_rows = [{**r, "status": OOM, "value": math.nan} if r["model"] == "biflow-b2" and r["batch_size"] == 8
                and r["decode"] == "off" else r for r in cur_rows]
    report = regress.compare_files(write(tmp_path / "b.csv", base_rows), write(tmp_path / "c.csv", cur_rows))
    verdicts = {(c.setting["model"], c.verdict) for c in report.regressions}
    assert verdicts == {("rf-b2", regress.MISSING), ("biflow-b2", regress.FAILED)}
    assert len(report.regressions) == 8


def test_baseline_from_another_device_compares_nothing(tmp_path, capsys):
    base = write(tmp_path / "b.csv", bench_rows())
    other = [{**r, "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"} for r in bench_rows()]
    cur = write(tmp_path / "c.csv", other)
    assert run_cli("--baseline", base, "--current", cur) == 2
    err = capsys.readouterr().err
    assert "cpu/Test CPU 2 cores/torch" in err and "cuda/NVIDIA H100 80GB HBM3/torch" in err
    assert "nothing compared" in err
    jax = write(tmp_path / "j.csv", [{**r, "backend": "jax"} for r in bench_rows()])
    with pytest.raises(InputError, match="backend"):
        regress.compare_files(base, jax)
    # CI machines without a baseline of their own may ask to skip, and are told so.
    assert run_cli("--baseline", base, "--current", cur, "--other-machine", "skip") == 0
    assert "SKIPPED, nothing compared: the baseline was measured on cpu/Test CPU" in capsys.readouterr().out


def test_unusable_inputs_exit_2(tmp_path, capsys):
    good = write(tmp_path / "good.csv", bench_rows())
    empty = tmp_path / "empty.csv"
    empty.write_text(rows_to_csv([]))
    no_cols = tmp_path / "nocols.csv"
    no_cols.write_text("model,metric,value\nrf-b2,ms_per_image,1.0\n")
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b'model,"metric\n\x00\xff"broken,,\n"')
    words = tmp_path / "words.csv"
    words.write_text(rows_to_csv([{**PROVENANCE, **bench_rows()[1], "value": "fast"}]))
    dup = write(tmp_path / "dup.csv", bench_rows() + bench_rows()[1:2])
    unrelated = write(tmp_path / "unrelated.csv", [{**r, "model": r["model"] + "-renamed"} for r in bench_rows()[1:]])
    cases = {empty: "holds no rows", no_cols: "lacks the result columns", garbage: "not a readable CSV",
             words: "must be a number or empty",
             dup: "two rows for one setting", unrelated: "no setting in common",
             tmp_path / "absent.csv": "does not exist"}
    for path, message in cases.items():
        assert run_cli("--baseline", good, "--current", path) == 2, path
        assert message in capsys.readouterr().err, path
    assert run_cli("--baseline", good, "--current", good, "--time-rtol", "-1") == 2


def test_small_absolute_memory_growth_is_noise(tmp_path):
    """CPU peak resident growth of a small point moves by tens of MiB run to run."""
    small = [{**r, "value": 12.6} if r["metric"] == PEAK_MEM_MB else r for r in bench_rows()]
    noisy = [{**r, "value": 21.8} if r["metric"] == PEAK_MEM_MB else r for r in bench_rows()]
    report = regress.compare_files(write(tmp_path / "b.csv", small), write(tmp_path / "c.csv", noisy))
    assert report.regressions == []
    grown = [{**r, "value": 12.6 + 2 * regress.MEMORY_ATOL_MB} if r["metric"] == PEAK_MEM_MB else r
             for r in bench_rows()]
    report = regress.compare_files(write(tmp_path / "b.csv", small), write(tmp_path / "g.csv", grown))
    assert {c.verdict for c in report.regressions} == {regress.MORE_MEMORY}


# --- schema 2: rows with 95% intervals --------------------------------------------------------

PROVENANCE_2 = {**PROVENANCE, "schema_version": 2}


def interval_rows(slow=1.0, model_slow=None, rel_half=0.02, speedup=30.0):
    """A bench run of schema 2: every timing with its 95% interval (+-rel_half), no spread, the
    calibration too, and a speed-up row of biflow-b2 over its teacher (not calibration-scaled)."""
    rows = []
    for r in bench_rows(slow=slow, model_slow=model_slow):
        r = {**r, "spread": ""}
        if r["metric"] != PEAK_MEM_MB:
            r.update(ci_low=r["value"] * (1 - rel_half), ci_high=r["value"] * (1 + rel_half), stable=True)
        rows.append(r)
    rows.append({**MACHINE, "model": "biflow-b2", "nfe": 1, "batch_size": 1, "decode": "off", "n": 5,
                 "metric": SPEEDUP, "value": speedup, "ci_low": speedup * 0.97, "ci_high": speedup * 1.03,
                 "config": {"teacher": "itarflow-b2", "repeats": 20}})
    return rows


def test_intervals_same_run_is_clean(tmp_path):
    path = write(tmp_path / "a.csv", interval_rows(), PROVENANCE_2)
    report = regress.compare_files(path, path)
    assert report.regressions == [] and not any("schema 1" in n for n in report.notes)
    assert {c.metric for c in report.changes} >= {SPEEDUP}


def test_intervals_two_times_slower_is_flagged(tmp_path):
    base = write(tmp_path / "b.csv", interval_rows(), PROVENANCE_2)
    cur = write(tmp_path / "c.csv", interval_rows(model_slow={"biflow-b2": 2.0}, speedup=15.0), PROVENANCE_2)
    flagged = {(c.setting["model"], c.metric) for c in regress.compare_files(base, cur).regressions}
    assert flagged == {("biflow-b2", MS_PER_IMAGE), ("biflow-b2", MS_PER_BATCH), ("biflow-b2", IMAGES_PER_S),
                       ("biflow-b2", SPEEDUP)}


def test_intervals_uniformly_30_percent_slower_machine_is_clean(tmp_path):
    base = write(tmp_path / "b.csv", interval_rows(), PROVENANCE_2)
    cur = write(tmp_path / "c.csv", interval_rows(slow=1.3), PROVENANCE_2)  # calibration 30% slower as well
    report = regress.compare_files(base, cur)
    assert report.calibration_ratio == pytest.approx(1.3) and report.regressions == []
    # the speed-up is a ratio of two timings of one machine: not scaled, and unchanged
    sp = next(c for c in report.changes if c.metric == SPEEDUP)
    assert sp.adjusted == sp.current == sp.baseline and sp.verdict == regress.SAME


def test_overlapping_intervals_are_noise_not_a_slowdown(tmp_path):
    """+15% on a run whose intervals are +-20% wide: beyond the 10% tolerance, yet within the noise."""
    base = write(tmp_path / "b.csv", interval_rows(rel_half=0.2), PROVENANCE_2)
    cur = write(tmp_path / "c.csv", interval_rows(model_slow={"rf-b2": 1.15}, rel_half=0.2), PROVENANCE_2)
    assert regress.compare_files(base, cur).regressions == []
    tight = write(tmp_path / "t.csv", interval_rows(rel_half=0.01), PROVENANCE_2)
    tight_cur = write(tmp_path / "tc.csv", interval_rows(model_slow={"rf-b2": 1.15}, rel_half=0.01), PROVENANCE_2)
    assert {c.setting["model"] for c in regress.compare_files(tight, tight_cur).regressions} == {"rf-b2"}


def test_a_schema_1_baseline_still_compares_through_its_spread(tmp_path, capsys):
    base = write(tmp_path / "b.csv", bench_rows())  # schema 1: spreads, no intervals
    clean = write(tmp_path / "c.csv", interval_rows(slow=1.3), PROVENANCE_2)
    report = regress.compare_files(base, clean)
    assert report.regressions == []
    assert any("baseline run have no 95% interval (schema 1)" in n and "2 x spread" in n for n in report.notes)
    slow = write(tmp_path / "s.csv", interval_rows(model_slow={"biflow-b2": 2.0}), PROVENANCE_2)
    assert {c.setting["model"] for c in regress.compare_files(base, slow).regressions} == {"biflow-b2"}
    assert run_cli("--baseline", base, "--current", slow) == 1
    assert "schema 1" in capsys.readouterr().out


def test_a_calibration_slowed_by_a_burst_of_other_work_does_not_hide_a_slowdown(tmp_path):
    """The current run's calibration at its start ran 20x slow (another job's burst), the one at its
    end at the machine's speed: the faster counts, the report says the machine changed, and a 2x
    slowdown is still flagged rather than passed off as 10x faster."""
    base = write(tmp_path / "b.csv", interval_rows(), PROVENANCE_2)
    rows = interval_rows(model_slow={"biflow-b2": 2.0}, speedup=15.0)
    calibration = next(r for r in rows if r["metric"] == CALIBRATION_MS)
    burst = {**calibration, "value": 20 * calibration["value"], "ci_low": 12 * calibration["value"],
             "ci_high": 30 * calibration["value"]}
    cur = write(tmp_path / "c.csv", [burst] + rows, PROVENANCE_2)
    report = regress.compare_files(base, cur)
    assert report.calibration_ratio == pytest.approx(1.0)
    assert any("the machine's speed changed during the run" in n for n in report.notes)
    assert {c.setting["model"] for c in report.regressions} == {"biflow-b2"}


@pytest.mark.parametrize("metric, new, note", [("kid", 0.02, "worse"), ("kid", 0.005, "better"),
                                               ("fd_dinov2", 90.0, "worse"), ("fd_dinov2", 70.0, "better"),
                                               ("density", 1.2, "better"), ("coverage", 0.4, "worse")])
def test_kid_and_fd_dinov2_are_lower_is_better_density_and_coverage_higher(tmp_path, metric, new, note):
    before = {"kid": 0.01, "fd_dinov2": 80.0, "density": 1.0, "coverage": 0.5}
    q = quality_rows()[0]
    rows = [{**q, "metric": m, "value": v} for m, v in before.items()]
    base = write(tmp_path / "b.csv", rows)
    cur = write(tmp_path / "c.csv", [{**r, "value": new} if r["metric"] == metric else r for r in rows])
    report = regress.compare_files(base, cur, metric_atol=1e-3)
    assert [(c.metric, c.note) for c in report.regressions] == [(metric, note)]
