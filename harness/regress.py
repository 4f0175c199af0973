"""Regression check: a current run file against a baseline run file, setting by setting.

A setting is one row's (model, nfe, device, device_name, backend, dtype, compiled,
batch_size, decode, guidance, config, metric). Rows of the two files are paired on it.
For timing rows `config` is left out of the key: bench writes its run parameters there
(repeats, threads, timer), which may differ between two runs of the same setting.

Timings (``ms_per_batch``, ``ms_per_image``, ``images_per_s``, ``mfu``, ``peak_mem_mb``):
- Machines drift, so speeds compare as ratios to the calibration workload each bench run
  times (``model="calibration"``, metric ``calibration_ms``): with ``r = cal_current /
  cal_baseline``, a current time ``t`` counts as ``t / r`` and a throughput ``x`` as ``x * r``
  (memory is not scaled). A uniformly slower machine is then no regression.
- Peak memory counts as more only beyond ``MEMORY_ATOL_MB`` as well (CPU resident growth
  is noisy by tens of MiB).
- Worse counts as a regression only when it exceeds both ``time_rtol`` x baseline and
  ``spread_k`` x the combined spread ``sqrt(s_b^2 + s_c^2 + (t * rel_cal)^2)``, where
  ``rel_cal`` is the calibration's own relative spread. Faster beyond both is reported as
  an improvement and never fails.

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

from harness.errors import InputError
from harness.leaderboard import records
from harness.results import (CALIBRATION_MS, FID, IMAGES_PER_S, MFU, MS_PER_BATCH, MS_PER_IMAGE, OK, PEAK_MEM_MB,
                             QUALITY_METRICS, SFID, read_run)

SETTING = ("model", "nfe", "device", "device_name", "backend", "dtype", "compiled", "batch_size", "decode",
           "guidance", "config", "metric")
MACHINE = ("device", "device_name", "backend")

TIMES = (MS_PER_BATCH, MS_PER_IMAGE)      # lower is better, scaled by the calibration ratio
THROUGHPUTS = (IMAGES_PER_S, MFU)         # higher is better, scaled by the calibration ratio
MEMORY = (PEAK_MEM_MB,)                   # lower is better, not scaled
TIMING = TIMES + THROUGHPUTS + MEMORY
LOWER_IS_BETTER = (FID, SFID)         # among quality metrics; the rest of QUALITY_METRICS: higher

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


def _calibration(rows: list[dict]) -> tuple[float, float] | None:
    """(median ms, relative spread) of the run's calibration rows, or None if it has none."""
    cal = [r for r in rows if r["metric"] == CALIBRATION_MS and r["status"] == OK and math.isfinite(r["value"])]
    if not cal:
        return None
    value = statistics.median(r["value"] for r in cal)
    spreads = [r["spread"] for r in cal if math.isfinite(r["spread"])]
    return value, (statistics.median(spreads) / value if spreads and value > 0 else 0.0)


def _key(r: dict) -> tuple:
    return tuple("" if c == "config" and r["metric"] in TIMING else r[c] for c in SETTING)


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
    """A setting as short text, the machine left out (both runs share it): ``rf-b2 float32 b8 decode=off``."""
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


def _spread(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _timing(b: dict, c: dict, metric: str, ratio: float, rel_cal: float, rtol: float, k: float):
    """Verdict for a timing pair: (adjusted current, threshold, verdict)."""
    scale = 1.0 if metric in MEMORY else (1.0 / ratio if metric in TIMES else ratio)
    adjusted = c["value"] * scale
    noise = k * math.sqrt(_spread(b["spread"]) ** 2 + (_spread(c["spread"]) * scale) ** 2
                          + (0.0 if metric in MEMORY else adjusted * rel_cal) ** 2)
    threshold = max(rtol * abs(b["value"]), noise, MEMORY_ATOL_MB if metric in MEMORY else 0.0)
    worse = adjusted - b["value"] if metric not in THROUGHPUTS else b["value"] - adjusted
    worse_verdict, better_verdict = (MORE_MEMORY, LESS_MEMORY) if metric in MEMORY else (SLOWER, FASTER)
    verdict = worse_verdict if worse > threshold else better_verdict if -worse > threshold else SAME
    return adjusted, threshold, verdict


def compare(baseline: list[dict], current: list[dict], *, time_rtol: float = DEFAULT_TIME_RTOL,
            metric_atol: float = DEFAULT_METRIC_ATOL, spread_k: float = DEFAULT_SPREAD_K) -> Report:
    """Compare two runs' rows (as `harness.leaderboard.records` gives them) setting by setting.

    Args:
        baseline, current: rows of the two runs.
        time_rtol: relative change a timing must exceed to count (0.10 = 10%).
        metric_atol: absolute change a quality (or any other numeric) metric must exceed.
        spread_k: how many combined spreads a timing change must also exceed.

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
    cal_b, cal_c = _calibration(baseline), _calibration(current)
    ratio, rel_cal = 1.0, 0.0
    has_timing = any(r["metric"] in TIMES + THROUGHPUTS for r in b_rows.values())
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
