"""Regression check: a current run file against a baseline run file, setting by setting.

A setting is one row's (model, nfe, device, device_name, backend, dtype, compiled,
batch_size, decode, guidance, config, metric). Rows of the two files are paired on it.
For timing rows `config` is left out of the key: bench writes its run parameters there
(repeats, threads, timer), which may differ between two runs of the same setting; for
``speedup`` rows only the teacher it names (and ``at``, for the best-throughput rows) counts.

Timings (``ms_per_batch``, ``ms_per_image``, ``images_per_s``, ``mfu``, ``peak_mem_mb``, and the
ratios ``speedup`` and ``frac_matmul_peak``):
- Machines drift, so speeds compare as ratios to the calibration workload each bench run
  times (``model="calibration"``, metric ``calibration_ms``; at the start and at the end of
  the run, of which the faster counts): with ``r = cal_current /
  cal_baseline``, a current time ``t`` counts as ``t / r`` and a throughput ``x`` as ``x * r``
  (memory is not scaled, nor are the ratios: both their parts ran on the same machine).
  A uniformly slower machine is then no regression.
- Each side is an interval: the row's 95% interval (``ci_low``, ``ci_high``), the current one
  scaled like its value and widened by the calibrations' own relative half-widths. A row of
  schema 1 has none: ``value +- spread_k x spread`` stands in (the report says so), and a row
  with neither (one call) is its value alone.
- Worse counts as a regression only when the current interval lies beyond the baseline's by
  the tolerance: for a time, its low end above ``(1 + time_rtol)`` x the baseline's high end;
  for a throughput or ratio, its high end below ``(1 - time_rtol)`` x the baseline's low end.
  So noise (wide or overlapping intervals) is never called a slowdown. Better by the same rule
  is reported as an improvement and never fails.
- Peak memory counts as more only beyond ``MEMORY_ATOL_MB`` as well (CPU resident growth
  is noisy by tens of MiB).

Every other numeric metric (``fid``, ``is``, ``sfid``, ``precision``, ``recall``, ...):
a change of more than ``metric_atol`` either way is flagged. Baselines for these are
fixed-seed runs, so any change means the computation changed: refresh the baseline
deliberately (results/README.md) if the change is intended.

Also flagged: a setting of the baseline missing from the current run, and a setting that
was ``ok`` and is now ``oom``/``error``. Refused with InputError (exit 2): files that are not
run files, empty files, two rows for one setting, files from different devices or
backends, and files with no setting in common.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from adapters.api.errors import InputError
from harness.leaderboard import records
from harness.results import (CALIBRATION_MS, FD_DINOV2, FID, FRAC_MATMUL_PEAK, IMAGES_PER_S, KID, MFU, MS_PER_BATCH,
                             MS_PER_IMAGE, OK, PEAK_MEM_MB, QUALITY_METRICS, SFID, SPEEDUP, read_run)
from harness.timing.stats import interval_or_spread

SETTING = ("model", "nfe", "device", "device_name", "backend", "dtype", "compiled", "batch_size", "decode",
           "guidance", "config", "metric")
MACHINE = ("device", "device_name", "backend")

TIMES = (MS_PER_BATCH, MS_PER_IMAGE)      # lower is better, scaled by the calibration ratio
THROUGHPUTS = (IMAGES_PER_S, MFU)         # higher is better, scaled by the calibration ratio
MEMORY = (PEAK_MEM_MB,)                   # lower is better, not scaled
RATIOS = (SPEEDUP, FRAC_MATMUL_PEAK)      # higher is better, not scaled (both parts on one machine)
TIMING = TIMES + THROUGHPUTS + MEMORY + RATIOS
# Lower is better among quality metrics; the rest of QUALITY_METRICS (IS, precision, recall, density,
# coverage) is higher is better.
LOWER_IS_BETTER = (FID, SFID, KID, FD_DINOV2)

DEFAULT_TIME_RTOL = 0.10
DEFAULT_METRIC_ATOL = 0.01
DEFAULT_SPREAD_K = 2.0
# Peak memory has no measured spread, and on a CPU the peak resident growth of a small
# model moves by tens of MiB with allocator and thread-pool state (seen: 12.6 vs 21.8 MiB for
# the same biflow-b2 point): changes under this many MiB are never a memory regression.
MEMORY_ATOL_MB = 64.0

# Verdicts.
SAME, SLOWER, FASTER, MORE_MEMORY, LESS_MEMORY, CHANGED, MISSING, NEW, FAILED, FIXED = (
    "same", "slower", "faster", "more memory", "less memory", "changed", "missing", "new", "failed", "fixed")
REGRESSIONS = (SLOWER, MORE_MEMORY, CHANGED, MISSING, FAILED)


class OtherMachineError(InputError):
    """The two runs come from different devices or backends: nothing can be compared."""


@dataclass(frozen=True)
class Change:
    """One setting compared. `adjusted` is the current value after calibration scaling;
    `threshold` is the change a regression must exceed (max of tolerance and noise)."""

    setting: dict
    metric: str
    baseline: float | None
    current: float | None
    adjusted: float | None
    threshold: float | None
    verdict: str
    note: str = ""

    @property
    def regression(self) -> bool:
        return self.verdict in REGRESSIONS

    @property
    def relative(self) -> float | None:
        """(adjusted - baseline) / baseline, or None when either is missing or the baseline is 0."""
        if self.baseline in (None, 0) or self.adjusted is None:
            return None
        return (self.adjusted - self.baseline) / abs(self.baseline)


@dataclass
class Report:
    changes: list[Change]
    calibration_ratio: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regression]


def _calibration(rows: list[dict], k: float) -> tuple[float, float, str] | None:
    """(ms, relative half-width of its interval, a note) of the run's calibration, or None if it has
    none. A run times it at its start and at its end: the faster of the two counts, because other
    work on a machine only ever slows the workload down, and the note says when they disagree."""
    cal = [r for r in rows if r["metric"] == CALIBRATION_MS and r["status"] == OK and math.isfinite(r["value"])
           and r["value"] > 0]
    if not cal:
        return None
    intervals = [_interval(r, k) for r in cal]
    best = min(range(len(cal)), key=lambda i: cal[i]["value"])
    low, high, _ = intervals[best]
    slowest = max(range(len(cal)), key=lambda i: cal[i]["value"])
    note = ""
    if intervals[slowest][0] > high:  # the slower calibration's interval lies above the faster's
        note = (f"its calibration took {cal[best]['value']:.3f} ms once and {cal[slowest]['value']:.3f} ms another time: "
                "the machine's speed changed during the run, so its timings are unsure; the faster counts")
    return cal[best]["value"], (high - low) / 2 / cal[best]["value"], note


def _key(r: dict) -> tuple:
    return tuple(_setting_config(r) if c == "config" else r[c] for c in SETTING)


def _setting_config(r: dict) -> str:
    """The part of `config` that tells settings apart: nothing for timings (run parameters), the
    teacher for speed-ups, the whole of it for every other metric."""
    if r["metric"] == SPEEDUP:
        try:
            config = json.loads(r["config"]) if r["config"] else {}
        except ValueError:
            config = {}
        config = config if isinstance(config, dict) else {}
        return json.dumps({k: config[k] for k in ("teacher", "at") if k in config}, sort_keys=True)
    return "" if r["metric"] in TIMING else r["config"]


def _index(rows: list[dict], name: str) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for r in rows:
        if r["metric"] == CALIBRATION_MS:
            continue
        key = _key(r)
        if key in out:
            raise InputError(f"the {name} run has two rows for one setting ({describe(dict(zip(SETTING, key)))}, "
                             f"metric {r['metric']}); a run file holds one row per setting and metric")
        out[key] = r
    return out


def describe(setting: dict) -> str:
    """A setting as short text, the machine left out (both runs share it): ``sit-b2 float32 b8 decode=off``."""
    parts = [setting["model"], setting["dtype"]]
    if setting["compiled"] not in ("", "False", "none"):
        parts.append(f"compiled={setting['compiled']}")
    if setting["batch_size"]:
        parts.append(f"b{setting['batch_size']}")
    parts += [f"{col}={setting[col]}" for col in ("decode", "nfe", "guidance") if setting[col]]
    try:
        config = json.loads(setting["config"]) if setting["config"] else {}
    except ValueError:
        config = {"config": setting["config"]}
    parts += [f"{k}={v}" for k, v in sorted(config.items())] if isinstance(config, dict) else [setting["config"]]
    return " ".join(p for p in parts if p)


def _interval(r: dict, k: float) -> tuple[float, float, str]:
    """A row's interval (`interval_or_spread`), or its value alone (one call, no spread)."""
    return interval_or_spread(r["value"], r["ci_low"], r["ci_high"], r["spread"], k) or (r["value"], r["value"], "")


def _timing(b: dict, c: dict, metric: str, ratio: float, rel_cal: float, rtol: float, k: float):
    """Verdict for a timing pair: (adjusted current, threshold, verdict). The threshold is the
    change of the adjusted value beyond which its interval lies past the baseline's by the tolerance."""
    scale = 1.0 if metric in MEMORY + RATIOS else (1.0 / ratio if metric in TIMES else ratio)
    adjusted = c["value"] * scale
    widen = 0.0 if metric in MEMORY + RATIOS else rel_cal
    b_low, b_high, _ = _interval(b, k)
    c_low, c_high, _ = _interval(c, k)
    c_low, c_high = c_low * scale * (1 - widen), c_high * scale * (1 + widen)
    lower_is_better = metric in TIMES + MEMORY
    if lower_is_better:  # worse: the current interval's low end above the baseline's high end (+ tolerance)
        worse_at = b_high * (1 + rtol) + (adjusted - c_low) - b["value"]
        better_at = b["value"] - b_low * (1 - rtol) + (c_high - adjusted)
        worse = adjusted - b["value"]
    else:  # worse: the current interval's high end below the baseline's low end (- tolerance)
        worse_at = b["value"] - b_low * (1 - rtol) + (c_high - adjusted)
        better_at = b_high * (1 + rtol) + (adjusted - c_low) - b["value"]
        worse = b["value"] - adjusted
    if metric in MEMORY:
        worse_at, better_at = max(worse_at, MEMORY_ATOL_MB), max(better_at, MEMORY_ATOL_MB)
    worse_verdict, better_verdict = (MORE_MEMORY, LESS_MEMORY) if metric in MEMORY else (SLOWER, FASTER)
    verdict = worse_verdict if worse > worse_at else better_verdict if -worse > better_at else SAME
    return adjusted, worse_at, verdict


def compare(baseline: list[dict], current: list[dict], *, time_rtol: float = DEFAULT_TIME_RTOL,
            metric_atol: float = DEFAULT_METRIC_ATOL, spread_k: float = DEFAULT_SPREAD_K) -> Report:
    """Compare two runs' rows (as `harness.leaderboard.records` gives them) setting by setting.

    Args:
        baseline, current: rows of the two runs.
        time_rtol: relative change a timing must exceed to count (0.10 = 10%).
        metric_atol: absolute change a quality (or any other numeric) metric must exceed.
        spread_k: a row without an interval (schema 1) stands for ``value +- spread_k x spread``.

    Returns:
        A `Report`; `report.regressions` is empty when the current run is clean.

    Example::

        report = compare_files("results/baselines/cpu.csv", "results/runs/cpu-new.csv")
        sys.exit(1 if report.regressions else 0)
    """
    if time_rtol < 0 or metric_atol < 0 or spread_k < 0:
        raise InputError("--time-rtol, --metric-atol and --spread-k must be >= 0")
    machines = [sorted({tuple(r[c] for c in MACHINE) for r in rows}) for rows in (baseline, current)]
    if machines[0] != machines[1]:
        def show(ms):
            return "; ".join("/".join(x or "?" for x in m) for m in ms)
        raise OtherMachineError(f"the baseline was measured on {show(machines[0])} but the current run on "
                         f"{show(machines[1])} (device/device_name/backend); nothing compared. Compare runs "
                         "from the same device and backend, or refresh the baseline (results/README.md)")
    b_rows, c_rows = _index(baseline, "baseline"), _index(current, "current")
    if not set(b_rows) & set(c_rows):
        raise InputError("the two runs have no setting in common (model, device, dtype, batch size, decode, ...); "
                         "nothing to compare")

    machine = "; ".join(" / ".join(x or "?" for x in m) for m in machines[0])
    notes = [f"machine: {machine} (device / name / backend)"]
    cal_b, cal_c = _calibration(baseline, spread_k), _calibration(current, spread_k)
    ratio, rel_cal = 1.0, 0.0
    has_timing = any(r["metric"] in TIMES + THROUGHPUTS for r in b_rows.values())
    for name, rows in (("baseline", b_rows), ("current", c_rows)):
        timed = [r for r in rows.values() if r["metric"] in TIMING and r["status"] == OK]
        fallback = [r for r in timed if _interval(r, spread_k)[2] == "spread"]
        if fallback:
            notes.append(f"{len(fallback)} timing rows of the {name} run have no 95% interval (schema 1): each stands "
                         f"for value +- {spread_k:g} x spread instead")
    for name, cal in (("baseline", cal_b), ("current", cal_c)):
        if cal and cal[2]:
            notes.append(f"the {name} run: {cal[2]}")
    if cal_b and cal_c:
        ratio = cal_c[0] / cal_b[0]
        rel_cal = math.hypot(cal_b[1], cal_c[1])
        notes.append(f"calibration: baseline {cal_b[0]:.3f} ms, current {cal_c[0]:.3f} ms: current timings "
                     f"are divided by {ratio:.3f} (the current machine's speed on the same fixed workload)")
    elif has_timing:
        missing = " and ".join(n for n, c in (("baseline", cal_b), ("current", cal_c)) if not c)
        notes.append(f"no calibration row in the {missing} run: timings compared raw, machine drift not removed")

    changes = []
    for key in sorted(set(b_rows) | set(c_rows)):
        setting = dict(zip(SETTING, key))
        metric = setting["metric"]
        b, c = b_rows.get(key), c_rows.get(key)
        if c is None:
            changes.append(Change(setting, metric, b["value"], None, None, None, MISSING, "not in the current run"))
            continue
        if b is None:
            changes.append(Change(setting, metric, None, c["value"], c["value"], None, NEW, "not in the baseline"))
            continue
        bv, cv = b["value"], c["value"]
        if b["status"] != OK or c["status"] != OK:
            verdict = FAILED if b["status"] == OK else FIXED if c["status"] == OK else SAME
            changes.append(Change(setting, metric, bv, cv, cv, None, verdict, f"status {b['status']} -> {c['status']}"))
            continue
        if not (math.isfinite(bv) and math.isfinite(cv)):
            verdict = SAME if math.isfinite(bv) == math.isfinite(cv) else CHANGED
            changes.append(Change(setting, metric, bv, cv, cv, None, verdict, "no value" if verdict == SAME else
                                  "a value appeared or disappeared"))
            continue
        if metric in TIMING:
            adjusted, threshold, verdict = _timing(b, c, metric, ratio, rel_cal, time_rtol, spread_k)
            changes.append(Change(setting, metric, bv, cv, adjusted, threshold, verdict))
        else:
            delta = cv - bv
            note = ""
            if abs(delta) > metric_atol and metric in QUALITY_METRICS:
                better = delta < 0 if metric in LOWER_IS_BETTER else delta > 0
                note = "better" if better else "worse"
            changes.append(Change(setting, metric, bv, cv, cv, metric_atol,
                                  CHANGED if abs(delta) > metric_atol else SAME, note))
    return Report(changes, ratio if cal_b and cal_c else None, notes)


def compare_files(baseline: str | Path, current: str | Path, **kwargs) -> Report:
    """`compare` on two run files (read with `harness.results.read_run`); same keyword arguments."""
    return compare(records(read_run(baseline), baseline), records(read_run(current), current), **kwargs)
