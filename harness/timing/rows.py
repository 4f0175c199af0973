"""A sweep's rows and pyperf benchmarks, from timed calls: `Prepared` (one point ready to
time, with everything its rows need) and `RowWriter`, which writes a point's timing rows
(ms_per_batch, ms_per_image, images_per_s, peak_mem_mb, mfu, frac_matmul_peak), the
``speedup`` rows of a pair, the calibration rows and one pyperf benchmark per point. The
rows' columns are `harness.results.COLUMNS`; `harness.timing.sweep` describes each metric.

Example (what `harness.timing.runner.Runner` does with a timed point)::

    writer = RowWriter(run, config, settings, backend="torch", platform="cpu", device_name="AMD EPYC",
                       compiled=False, per_chip=False, timer_name="time.perf_counter", peak=None)
    writer.timing(prep, series)
    writer.pyperf(benchmark_name(prep.settings, prep.label), series, prep.settings)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pyperf

from adapters.api.sampler import ModelInfo
from harness.results import (
    CALIBRATION_MS,
    FRAC_MATMUL_PEAK,
    IMAGES_PER_S,
    IMAGES_PER_S_PER_CHIP,
    MFU,
    MS_PER_BATCH,
    MS_PER_IMAGE,
    PEAK_MEM_MB,
    SPEEDUP,
    RunFile,
)
from harness.timing.adaptive import Series
from harness.timing.clocks import Timing
from harness.timing.config import SweepConfig
from harness.timing.peaks import mfu
from harness.timing.plan import Point, Setting
from harness.timing.stats import ratio_interval, summarise, warning_text

CALIBRATION_ID = "calibration"  # `model` of the calibration rows
BEST = "best throughput"  # `config.at` of the speed-up rows at each model's best batch size
# What of a sampler's `last_stats` the timing rows keep in `config` (TARFlow's decoding passes).
STATS_KEPT = ("iterations_mean", "iterations_max", "iterations_per_block")


@dataclass
class Prepared:
    """One point ready to time: its workload and everything its rows need."""

    point: Point
    info: ModelInfo
    fn: Callable[[], Any]
    settings: dict[str, Any]
    config: dict[str, Any]
    flops_per_batch: float
    chips: int = 1
    peak_mb: float | None = None  # known before timing (JAX: XLA's memory analysis)
    label: str = ""  # the member's name in the rounds: `Setting.label`
    stats: dict[str, Any] = field(default_factory=dict)  # what the sampler reported of its last call
    notes: str = ""  # the quality gate's flag for every timing row ("not representative: ...")


class RowWriter:
    """Writes a sweep's rows to its run file and keeps its pyperf benchmarks.

    Args:
        run: the run file.
        config: the sweep (its dtype, seed, guidance and timing parameters go into the rows).
        settings: every model's option settings (their NFE, whether they decode exactly).
        backend, platform, device_name: the rows' ``backend``, ``device`` and ``device_name``.
        compiled: every call runs compiled (XLA), whatever the point's compile mode.
        per_chip: the batch is split over chips: rows add images/s per chip.
        timer_name: pyperf's ``timer`` metadata.
        peak: the data-sheet peak FLOP/s of one chip in the run's dtype; None: no MFU rows.
    """

    def __init__(self, run: RunFile, config: SweepConfig, settings: dict[tuple[str, int], Setting], *,
                 backend: str, platform: str, device_name: str, compiled: bool, per_chip: bool, timer_name: str,
                 peak: float | None):
        self.run = run
        self.config = config
        self.setting_of = settings
        self.backend, self.platform, self.device_name = backend, platform, device_name
        self.compiled = compiled
        self.per_chip = per_chip
        self.timer_name = timer_name
        self.peak = peak
        self.benchmarks: list[pyperf.Benchmark] = []
        self.matmul_peak: dict[str, Any] | None = None  # FLOP/s, dtype, workload, stable, note (set_matmul_peak)

    def settings(self, info: ModelInfo | None, point: Point, weights: str, **over: Any) -> dict[str, Any]:
        """The columns that say which point a row measures (`over` replaces any of them)."""
        s = dict(backend=self.backend, device=self.platform, device_name=self.device_name, dtype=self.config.dtype,
                 compiled=point.compiled or self.compiled, batch_size=point.batch_size, decode=point.part,
                 guidance=self.config.guidance, seed=self.config.seed, weights=weights, model=point.model)
        if info is not None:
            s.update(family=info.family, params=info.params, nfe=self.setting_of[(point.model, point.variant)].nfe)
        s.update(over)
        return s

    def run_config(self) -> dict[str, Any]:
        c = self.config
        return {"warmup": c.warmup, "repeats": c.repeats, "max_time": c.max_time, "ci_target": c.ci_target}

    def _stat_row(self, settings: dict[str, Any], metric: str, values: list[float], config: dict[str, Any],
                  stable: bool, notes: str) -> None:
        s = summarise(values)
        self.run.add(**settings, metric=metric, value=s.median, spread=s.mad, n=s.n, ci_low=s.ci_low,
                     ci_high=s.ci_high, stable=stable, notes=notes or None, config={**config, **s.percentiles()})

    def timing(self, prep: Prepared, series: Series) -> None:
        """The point's rows from its timed calls (seconds each)."""
        bs, chips, seconds = prep.point.batch_size, prep.chips, series.values
        stable = series.stable(self.config.ci_target)
        config = {**prep.config, "stop": series.stop, **{k: prep.stats[k] for k in STATS_KEPT if k in prep.stats}}
        notes = "; ".join(n for n in (series.note, prep.notes) if n)
        per_call = {MS_PER_BATCH: [v * 1e3 for v in seconds],
                    MS_PER_IMAGE: [v * 1e3 / bs for v in seconds],
                    IMAGES_PER_S: [bs / v for v in seconds]}
        if self.per_chip:
            per_call[IMAGES_PER_S_PER_CHIP] = [bs / v / chips for v in seconds]
            config["chips"] = chips
        for metric, values in per_call.items():
            self._stat_row(prep.settings, metric, values, config, stable, notes)
        peak_mb = prep.peak_mb if prep.peak_mb is not None else series.peak_mb
        if peak_mb is not None:
            self.run.add(**prep.settings, metric=PEAK_MEM_MB, value=peak_mb, n=len(seconds), config=config)
        if prep.flops_per_batch <= 0:
            return
        flops = {"flops_per_batch": prep.flops_per_batch}
        if self.peak is not None:
            peak = self.peak * chips
            self._stat_row(prep.settings, MFU, [mfu(prep.flops_per_batch, v, peak) for v in seconds],
                           {**config, **flops, "peak_flops": peak}, stable, notes)
        if self.matmul_peak is not None:
            mp = self.matmul_peak
            peak = mp["flops"] * chips
            note = "; ".join(n for n in (notes, mp["note"]) if n)
            self._stat_row(prep.settings, FRAC_MATMUL_PEAK, [mfu(prep.flops_per_batch, v, peak) for v in seconds],
                           {**config, **flops, "matmul_peak_flops": peak, "matmul_workload": mp["workload"]},
                           stable and mp["stable"], note)

    def speedup(self, fast: Prepared, teacher: Prepared, fast_ms: list[float], teacher_ms: list[float], *,
                paired: bool, stop: str, note: str, **over: Any) -> None:
        """A `speedup` row: the teacher's median ms per image over the fast model's, with its bootstrap interval."""
        ratio, low, high = ratio_interval(teacher_ms, fast_ms, paired=paired)
        hw = None if low is None else (high - low) / 2 / ratio
        settings = {**fast.settings, **over}
        config = {**self.run_config(), "teacher": teacher.point.model, "teacher_weights": teacher.settings["weights"],
                  "options": fast.config["options"], "teacher_options": teacher.config["options"],
                  "teacher_quality": teacher.settings["quality"],
                  # the teacher at its family's exact decoding (TARFlow: sequential), the speed-up papers quote
                  "teacher_exact": self.setting_of[(teacher.point.model, teacher.point.variant)].exact,
                  "pairing": "paired rounds" if paired else "unpaired", "stop": stop,
                  "fast_ms_per_image": summarise(fast_ms).median, "teacher_ms_per_image": summarise(teacher_ms).median}
        if not paired:
            config.update(at=BEST, batch_size=fast.point.batch_size, teacher_batch_size=teacher.point.batch_size)
        self.run.add(**settings, metric=SPEEDUP, value=ratio, n=min(len(fast_ms), len(teacher_ms)), ci_low=low,
                     ci_high=high, stable=hw is not None and hw <= self.config.ci_target, notes=note or None,
                     config=config)

    def pyperf(self, name: str, timing: Timing | Series, metadata: dict[str, Any]) -> None:
        """One pyperf benchmark of `timing`'s calls (its warm-ups apart), with the row's columns as metadata."""
        meta = {"name": name, "unit": "second", "loops": 1,
                "timer": self.timer_name,
                "nfebench_run_id": self.run.provenance["run_id"], "git_sha": self.run.provenance["git_sha"]}
        meta.update({k: v for k, v in metadata.items() if isinstance(v, (int, float, str)) and v != ""})
        run = pyperf.Run(list(timing.values), warmups=[(1, w) for w in timing.warmups], metadata=meta)
        self.benchmarks.append(pyperf.Benchmark([run]))

    def calibration(self, timing: Timing, description: str, flops: float, *, when: str,
                    config: dict[str, Any]) -> None:
        """The calibration workload's row (`when`: at the start or the end of the run) and benchmark."""
        s = summarise([v * 1e3 for v in timing.values])
        config = {"workload": description, "flops": flops, "peak_flop_per_s": flops / min(timing.values), **config,
                  "stop": timing.stop, "when": when, **s.percentiles()}
        self.run.add(model=CALIBRATION_ID, backend=self.backend, device=self.platform, device_name=self.device_name,
                     dtype="float32", compiled=self.compiled, seed=0, metric=CALIBRATION_MS, value=s.median,
                     spread=s.mad, n=s.n, ci_low=s.ci_low, ci_high=s.ci_high, stable=s.stable(self.config.ci_target),
                     notes=timing.note or None, config=config)
        self.pyperf(f"{CALIBRATION_ID}/{when}", timing, {"workload": description})

    def set_matmul_peak(self, timing: Timing, description: str, flops: float) -> None:
        """The peak is the fastest call's FLOP/s (a peak is what the machine reaches; other work on
        a shared machine only slows calls down); a calibration that missed its interval target
        leaves every fraction of it marked unstable."""
        s = summarise(timing.values)
        self.matmul_peak = {"flops": flops / min(timing.values), "dtype": self.config.dtype, "workload": description,
                            "stable": s.stable(self.config.ci_target),
                            "note": "" if s.stable(self.config.ci_target) else
                            f"the matmul peak itself is unsure ({warning_text(s)} in its calibration)"}


def benchmark_name(s: dict[str, Any], member: str) -> str:
    """pyperf benchmark name: the settings that tell points apart within a run, and match the
    same point across runs (so `python -m pyperf compare_to old.json new.json` pairs them);
    `member` is the setting's label (the model id, with its options if any)."""
    return (f"{member}/bs{s['batch_size']}/decode-{s['decode']}/{s['dtype']}/"
            f"{'compiled' if s['compiled'] else 'eager'}")
