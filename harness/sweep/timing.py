"""A sweep's timing: each model's settings through the timer of ``nfebench bench``
(`harness.timing.torch_runner.TorchRunner`), timed in alternating rounds against the model's
baseline setting (`harness.timing.config.SweepConfig.baselines`), so each ratio to the baseline
survives drift of the machine.

Per setting, batch size and decode part, the rows bench writes for a point (ms_per_batch,
ms_per_image, images_per_s, peak_mem_mb, mfu where the device's peak is known,
frac_matmul_peak) and, for every setting but the baseline, a ``speedup`` row: the baseline's
median ms per image over the setting's, with its paired-bootstrap interval
(``config.teacher`` the model itself, ``config.teacher_options`` the baseline's options).
The decoder alone (bench's ``decode=only`` points) is not timed: it belongs to no setting.

The calibration workload runs once per process that times anything, before its first model
(its matmul peak is every model's ``frac_matmul_peak`` basis) and after its last.

Example::

    timer = SettingTimer(template, provenance, calibrate=True)
    timed = timer.time_model("rf-mini", [baseline, *others])
    timed.rows[baseline.label], timed.speedups, timer.finish()
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import pyperf

from adapters.api.errors import InputError
from harness.results import RunFile
from harness.settings import label
from harness.sweep.grid import GridSetting
from harness.timing.config import SweepConfig, validate
from harness.timing.plan import DECODER, Setting, inspect_models, plan
from harness.timing.runner import END, START
from harness.timing.torch_runner import TorchRunner


class RowBuffer(RunFile):
    """A `RunFile` that keeps its rows in memory: the sweep stores them per setting in its work
    dir and writes its run file from there."""

    def __init__(self, provenance: Mapping[str, Any]):
        self.path, self.provenance, self.rows = None, dict(provenance), []

    def flush(self) -> None:
        """Nothing to write: the sweep's work dir holds the rows."""


def suite_json(benchmarks: Sequence[pyperf.Benchmark]) -> str | None:
    """The pyperf suite of `benchmarks` as JSON text (None for none)."""
    if not benchmarks:
        return None
    buf = io.StringIO()
    pyperf.BenchmarkSuite(list(benchmarks)).dump(buf, compact=False)
    return buf.getvalue()


def timing_config(template: SweepConfig, model: str, settings: Sequence[GridSetting]) -> SweepConfig:
    """`template` narrowed to `model`, its `settings` (the first is the baseline) timed against the first."""
    return replace(template, models=(model,), options={model: tuple(dict(s.options) for s in settings)},
                   baselines={model: 0}, checkpoints={k: v for k, v in template.checkpoints.items() if k == model},
                   overrides={k: v for k, v in template.overrides.items() if k == model},
                   setting_guidance=True, quality=False, calibrate=False)


def check_timing(template: SweepConfig, model: str, settings: Sequence[GridSetting]) -> dict[tuple[str, int], Setting]:
    """Every check the timing of `model`'s settings makes before any work (the device, the
    checkpoint against the model, each option's value, the NFE of each setting): InputError."""
    config = timing_config(template, model, settings)
    validate(config)
    return inspect_models(config)[1]


@dataclass
class TimedModel:
    """What timing one model's settings wrote: rows and pyperf benchmarks per setting label,
    and one line per point that failed other than by running out of memory."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    benchmarks: dict[str, list[pyperf.Benchmark]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class SettingTimer:
    """Times each model's settings in one process (see the module text).

    Args:
        template: the timing settings every model shares (batch sizes, decode, device, dtype,
            budget, seed, checkpoints, overrides); models and options are filled in per model.
        provenance: the rows' provenance columns.
        calibrate: time the calibration workload (before the first model, after the last).
    """

    def __init__(self, template: SweepConfig, provenance: Mapping[str, Any], *, calibrate: bool):
        self.template, self.provenance, self.calibrate = template, dict(provenance), calibrate
        self._calibration: tuple[TorchRunner, RowBuffer] | None = None

    def _calibrated(self) -> dict[str, Any] | None:
        """The process's matmul peak, timed on first use (None without calibration)."""
        if not self.calibrate:
            return None
        if self._calibration is None:
            buffer = RowBuffer(self.provenance)
            runner = TorchRunner(self.template, buffer, False, {})
            runner.calibrate(START)
            self._calibration = runner, buffer
        return self._calibration[0].rows.matmul_peak

    def time_model(self, model: str, settings: Sequence[GridSetting]) -> TimedModel:
        """Time `settings` of `model` (the first is its baseline) in alternating rounds."""
        config = timing_config(self.template, model, settings)
        infos, planned = inspect_models(config)
        peak = self._calibrated()
        buffer = RowBuffer(self.provenance)
        runner = TorchRunner(config, buffer, False, planned)
        runner.rows.matmul_peak = peak
        runner.run_points([p for p in plan(config, infos) if p.part != DECODER], infos)
        labels = {s.label for s in settings}
        baseline = settings[0].label
        out = TimedModel(errors=list(runner.errors))
        for row in buffer.rows:
            options = (row.get("config") or {}).get("options")
            name = label(model, options) if options is not None else baseline  # a failed build names no setting
            if name not in labels:
                raise InputError(f"timing {model}: a row of an unknown setting {name} (the timer and the grid "
                                 f"disagree on its options)")
            out.rows.setdefault(name, []).append(row)
        for bench in runner.rows.benchmarks:
            name = max((n for n in labels if bench.get_name().startswith(f"{n}/bs")), key=len)
            out.benchmarks.setdefault(name, []).append(bench)
        return out

    def finish(self) -> tuple[list[dict[str, Any]], str | None] | None:
        """The calibration at the end of the process: (its rows from start and end, their pyperf
        suite JSON), None when nothing was timed."""
        if self._calibration is None:
            return None
        runner, buffer = self._calibration
        runner.calibrate(END)
        return buffer.rows, suite_json(runner.rows.benchmarks)
