"""The backend-neutral timing runner: the flow of a sweep, whatever framework runs the model.
`harness.timing.torch_runner.TorchRunner` and `harness.timing.jax_runner.JaxRunner` subclass
`Runner` and supply the backend's steps.

What `Runner` does, in one place for both backends:

- the driver: the planned points one build group at a time (`run_points`), the quality gate
  of each setting before any timing, each (batch size, part) cell timed together in
  alternating rounds (`harness.timing.adaptive.time_rounds`), pairs' ``speedup`` rows, and
  the best-throughput speed-ups per pair and part;
- an ``oom`` or ``error`` row for a point that did not finish;
- the calibration: the matmul workload timed at the start and the end of the run, and the
  run's matmul peak in its own dtype.

The rows themselves are written by `harness.timing.rows.RowWriter` (``runner.rows``).

What a backend supplies (each documented where `Runner` declares it): where its samplers
are loaded (`_placement`), how a model is built (`_build`) and a point prepared
(`_prepare`), the matmul loop of the calibration (`_matmul_loop`), its memory regions
(`_memory`), what it frees between points (`_free`), how it reports running out of memory
(`_is_oom`), and what the rows' config says of it (`_backend_config`, `clock_name`).
"""

from __future__ import annotations

import gc
import itertools
import sys
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch

from adapters import load_sampler
from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, Sampler, weights_with_decoder
from adapters.api.seeding import sample_labels, sample_noise
from harness.pairs import pairs_among
from harness.quality import QualityGate, Verdict
from harness.results import ERROR, MS_PER_BATCH, OOM, REFERENCE, UNVERIFIED, RunFile
from harness.settings import json_options, nfe_of
from harness.timing.adaptive import Budget, Series, time_rounds
from harness.timing.clocks import Clock, Timing, measure
from harness.timing.config import SweepConfig
from harness.timing.peaks import flops_per_image
from harness.timing.plan import (
    DECODER,
    END_TO_END,
    GENERATOR,
    Point,
    Setting,
    decoder_of,
    groups,
)
from harness.timing.rows import Prepared, RowWriter, benchmark_name
from harness.timing.stats import summarise

# The calibration workload is timed the same way in every run, whatever --repeats says, at the
# start and again at the end of the sweep: a machine whose speed changed in between shows it.
CALIBRATION_REPEATS, CALIBRATION_MAX_TIME = 20, 5.0
START, END = "start", "end"  # `config.when` of the calibration rows


@dataclass
class Built:
    """A model ready to time: its sampler, its decoder's weights (None when no decode is
    timed) and what was compiled (for the rows' config)."""

    sampler: Any
    dec_weights: str | None
    compiled_what: str | None
    own_bytes: int | None = None  # CUDA: device memory its build allocated (weights, decoder)


class Runner:
    """Runs the planned points, one build group at a time, saving rows as it goes.

    Args:
        config: the sweep.
        run: the run file the rows go to.
        progress: show a progress bar on stderr.
        settings: every model's option settings, from `harness.timing.plan.inspect_models`.
        platform: the rows' ``device`` (cpu, cuda, tpu, ...).
        device_name: the rows' ``device_name``.
        clock: times one call.
        peak: the data-sheet peak FLOP/s of one chip in the run's dtype, None where unknown.
        feature_device: where the quality gate computes its FID features.

    Example (what `harness.timing.sweep.run_sweep` does)::

        runner = TorchRunner(config, RunFile(out), True, settings)
        runner.calibrate(START)
        runner.run_points(plan(config, infos), infos)
        runner.calibrate(END)
        suite = pyperf.BenchmarkSuite(runner.rows.benchmarks)
    """

    backend: str  # the rows' ``backend``
    timer_name: str  # pyperf's ``timer`` metadata
    clock_name: str  # the timed rows' ``config.timer``
    always_compiled = False  # every call runs compiled (XLA): the rows say compiled=True, the gate's reference too
    splits_batch = False  # the batch is split over the chips: rows add images/s per chip
    workload_note = ""  # appended to the calibration workload's description

    def __init__(self, config: SweepConfig, run: RunFile, progress: bool, settings: dict[tuple[str, int], Setting],
                 *, platform: str, device_name: str, clock: Clock, peak: float | None, feature_device: str):
        self.config = config
        self.run = run
        self.progress = progress
        self.settings = settings
        self.platform = platform
        self.clock = clock
        self.rows = RowWriter(run, config, settings, backend=self.backend, platform=platform, device_name=device_name,
                              compiled=self.always_compiled, per_chip=self.splits_batch, timer_name=self.timer_name,
                              peak=peak)
        self.errors: list[str] = []
        self.budget = Budget(repeats=config.repeats, max_time=config.max_time, ci_target=config.ci_target)
        self.verdicts: dict[tuple[str, int, bool], Verdict] = {}  # (model, variant, compiled) -> the gate's
        self.built: dict[str, Built] = {}  # the build group being timed
        self.gate = QualityGate(config.gate(), run, seed=config.seed, guidance=config.guidance,
                                feature_device=feature_device, build_reference=self._reference_sampler)

    # --- what a backend supplies ----------------------------------------------------------

    def _placement(self, dtype: str) -> dict[str, Any]:
        """`load_sampler`'s keywords that put a sampler on this backend's device in `dtype`."""
        raise NotImplementedError

    def _build(self, model: str, compiled: bool, decoding: bool) -> Built:
        """`model` loaded in the run's dtype (with its decoder when `decoding`), compiled if asked."""
        raise NotImplementedError

    def _prepare(self, built: Built, info: ModelInfo, point: Point) -> Prepared:
        """The point's workload with its inputs on the device (through `_prepared`)."""
        raise NotImplementedError

    def _matmul_loop(self, n: int, reps: int, dtype: str) -> Callable[[], Any]:
        """The calibration workload: `reps` chained (n, n) matmuls in `dtype`, inputs from a fixed seed."""
        raise NotImplementedError

    def _is_oom(self, exc: Exception) -> bool:
        """Whether `exc` says the device ran out of memory."""
        raise NotImplementedError

    def _backend_config(self) -> dict[str, Any]:
        """What the ``config`` of the timed and calibration rows says of how the backend runs
        (torch: its intra-op threads); {} by default."""
        return {}

    def _memory(self, built: dict[str, Built]) -> Callable[[str], ContextManager] | None:
        """Peak memory regions per member (member -> its model's build); None: the backend
        knows each point's memory before timing (`Prepared.peak_mb`)."""
        return None

    def _free(self) -> None:
        gc.collect()

    # --- calibration ------------------------------------------------------------------

    def _matmul_workload(self, dtype: str) -> tuple[Callable[[], Any], str, float]:
        """A fixed matmul loop of a few hundred ms on this platform: the workload, its description
        and its FLOPs (2 n^3 per matmul). float32 is the calibration; the run's own dtype gives the
        matmul peak its rows are a fraction of."""
        n, reps = (512, 40) if self.platform == "cpu" else (8192, 100)
        description = f"{dtype} matmul {n}x{n} x{reps}{self.workload_note}"
        return self._matmul_loop(n, reps, dtype), description, 2.0 * n**3 * reps

    def _measure_calibration(self, work: Callable[[], Any]) -> Timing:
        return measure(work, self.clock, warmup=1, repeats=CALIBRATION_REPEATS, max_time=CALIBRATION_MAX_TIME,
                       ci_target=self.config.ci_target)

    def calibrate(self, when: str = START) -> None:
        """Time the calibration workload (`when`: at the START or the END of the sweep); the
        start's also sets the matmul peak the rows are a fraction of, in the run's dtype (the
        same workload timed again unless the run is float32)."""
        work, description, flops = self._matmul_workload("float32")
        timing = self._measure_calibration(work)
        self.rows.calibration(timing, description, flops, when=when, config=self._backend_config())
        if when != START:
            return
        if self.config.dtype != "float32":
            work, description, flops = self._matmul_workload(self.config.dtype)
            timing = self._measure_calibration(work)
        self.rows.set_matmul_peak(timing, description, flops)

    # --- points -----------------------------------------------------------------------

    def _load(self, model: str, dtype: str) -> Sampler:
        c = self.config
        return load_sampler(model, checkpoint=c.checkpoints.get(model), **self._placement(dtype),
                            **dict(c.overrides.get(model, {})))

    def _reference_sampler(self, model: str) -> Sampler:
        """`model` in float32, as its reference runs, with the same weights: the quality gate's
        reference (the group's own build when it is that already)."""
        built = self.built.get(model)
        if built is not None and self.config.dtype == "float32" and self._as_reference(built.compiled_what is not None):
            return built.sampler
        return self._load(model, "float32")

    def _as_reference(self, compiled: bool) -> bool:
        """Whether a setting timed with `compiled` runs as its reference does (the reference is
        eager, but under XLA compiled too: see `harness.quality`)."""
        return self.always_compiled or not compiled

    def _point_config(self, point: Point, compiled_what: str | None) -> dict[str, Any]:
        setting = self.settings[(point.model, point.variant)]
        config = {**self.rows.run_config(), **self._backend_config(), "timer": self.clock_name,
                  "options": json_options(setting.options)}
        verdict = self.verdicts.get((point.model, point.variant, point.compiled))
        if verdict is not None and point.part != DECODER:
            config["quality_check"] = verdict.reason
        if point.part == DECODER:
            config["decoder_of"] = point.model
        if compiled_what:
            config["compiled"] = compiled_what
        return config

    def _point_settings(self, built: Built, info: ModelInfo, point: Point) -> dict[str, Any]:
        if point.part == DECODER:  # named after the decoder its family's spec declares
            decoder = decoder_of(point.model, info)
            return self.rows.settings(None, point, str(built.dec_weights), model=decoder.name, family=decoder.name,
                                      params=decoder.params, nfe=1)
        latent = info.space == "latent"
        weights = weights_with_decoder(info.weights, built.dec_weights if point.part == END_TO_END and latent else None)
        verdict = self.verdicts.get((point.model, point.variant, point.compiled))
        own = self.settings[(point.model, point.variant)].options
        guidance = {"guidance": own["guidance"]} if "guidance" in own else {}  # a sweep's setting sets its own
        return self.rows.settings(info, point, weights, quality=None if verdict is None else verdict.quality,
                                  **guidance)

    def _inputs(self, info: ModelInfo, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The point's noise (N, *sample_shape) and labels (N,) from the sweep's seed, on the CPU."""
        samples = range(batch_size)
        return sample_noise(self.config.seed, samples, info.sample_shape), sample_labels(self.config.seed, samples,
                                                                                          info.num_classes)

    def _prepared(self, point: Point, info: ModelInfo, fn: Callable[[], Any], settings: dict[str, Any],
                  config: dict[str, Any], **extra: Any) -> Prepared:
        verdict = self.verdicts.get((point.model, point.variant, point.compiled))
        notes = verdict.notes if verdict is not None and point.part != DECODER else ""
        member = settings["model"] if point.part == DECODER else self.settings[(point.model, point.variant)].label
        flops = point.batch_size * flops_per_image(info, decoder_of(point.model, info),
                                                   generator=point.part != DECODER, decode=point.part != GENERATOR)
        return Prepared(point, info, fn, settings, config, flops, label=member, notes=notes, **extra)

    def _failed(self, info: ModelInfo, point: Point, exc: Exception, *, settings: dict[str, Any] | None = None,
                config: dict[str, Any] | None = None) -> None:
        """One row for a point that did not finish: ``oom`` if it ran out of memory (the sweep
        expects that at large batch sizes), else ``error``, which the command reports."""
        settings = settings or self.rows.settings(info, point, info.weights)
        if self._is_oom(exc):
            self.run.add(**settings, metric=MS_PER_BATCH, status=OOM, notes=_first_line(exc), config=config)
            return
        note = f"{type(exc).__name__}: {_first_line(exc)}"
        where = self.settings[(point.model, point.variant)].label if (point.model, point.variant) in self.settings \
            else point.model
        self.errors.append(f"{where} bs={point.batch_size} decode={point.part}: {note}")
        self.run.add(**settings, metric=MS_PER_BATCH, status=ERROR, notes=note, config=config)

    # --- the driver -------------------------------------------------------------------

    def run_points(self, points: list[Point], infos: dict[str, ModelInfo]) -> None:
        """Time `points` (in `harness.timing.plan.plan`'s order), writing their rows."""
        from tqdm import tqdm

        bar = tqdm(total=len(points), unit="point", desc="nfebench bench", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        group_of = {m: g for g in groups(self.config.models) for m in g}
        try:
            # consecutive points of one (compile mode, build group) share one build of each model
            for _, unit in itertools.groupby(points, key=lambda p: (p.compiled, group_of[p.model])):
                self._run_group(list(unit), infos, bar)
        finally:
            bar.close()

    def _check_quality(self, points: list[Point], infos: dict[str, ModelInfo]) -> None:
        """The quality gate for each setting of the group (`harness.quality`), before any timing,
        so every row of a setting carries its verdict."""
        for model, variant, compiled in dict.fromkeys((p.model, p.variant, p.compiled) for p in points
                                                      if p.part != DECODER and p.model in self.built):
            setting, info = self.settings[(model, variant)], infos[model]
            point = Point(model, compiled, self.config.quality_samples, GENERATOR, variant)
            ref_point = Point(model, False, point.batch_size, GENERATOR, variant)
            reference = {**self.rows.settings(info, ref_point, info.weights), "dtype": "float32",
                         "nfe": nfe_of(model, guidance=self.config.guidance, options=setting.reference_options,
                                       **dict(self.config.overrides.get(model, {})))}
            try:
                verdict = self.gate.check(model, self.built[model].sampler, setting.options,
                                          reference_options=setting.reference_options, exact=setting.exact,
                                          dtype=self.config.dtype, eager=self._as_reference(compiled),
                                          settings=self.rows.settings(info, point, info.weights),
                                          reference_settings=reference)
            except InputError:
                raise
            except Exception as exc:  # the setting is still timed; its rows say the check did not happen
                verdict = Verdict(UNVERIFIED, f"the quality check failed: {type(exc).__name__}: {_first_line(exc)}")
            self.verdicts[(model, variant, compiled)] = verdict
            if verdict.quality != REFERENCE:
                self._free()

    def _run_group(self, points: list[Point], infos: dict[str, ModelInfo], bar) -> None:
        compiled = points[0].compiled
        models = list(dict.fromkeys(p.model for p in points))
        built = self.built
        for model in models:
            bar.set_postfix_str(f"building {model}")
            decoding = any(p.part != GENERATOR for p in points if p.model == model)
            try:
                built[model] = self._build(model, compiled, decoding)
            except InputError:
                raise
            except Exception as exc:  # the model cannot be built: one row says why, its points are skipped
                mine = [p for p in points if p.model == model]
                self._failed(infos[model], Point(model, compiled, mine[0].batch_size, GENERATOR), exc)
                bar.update(len(mine))
            if model not in built:
                self._free()  # after the except block, so the traceback's tensors are gone
        done: dict[Point, tuple[Prepared, Series]] = {}
        try:
            bar.set_postfix_str(f"quality of {'+'.join(built)}")
            self._check_quality(points, infos)
            for model in models:
                self.gate.forget(model)
            for _, cell in itertools.groupby(points, key=lambda p: (p.batch_size, p.part)):
                cell = [p for p in cell if p.model in built]
                if cell:
                    done.update(self._run_cell(cell, built, infos, bar))
            self._best_throughput_rows(done)
        finally:
            built.clear()
            done.clear()
            self._free()

    def _member_pairs(self, prepared: dict[str, Prepared]) -> list[tuple[str, str]]:
        """(fast, teacher) members: every setting of a fast model with every setting of its teacher."""
        of = {m: [k for k, p in prepared.items() if p.point.model == m] for m in {p.point.model for p in prepared.values()}}
        return [(f, t) for fast, teacher in pairs_among(of) for f in of[fast] for t in of[teacher]] + \
            self._baseline_pairs(prepared)

    def _baseline_pairs(self, prepared: dict[str, Prepared]) -> list[tuple[str, str]]:
        """(setting, baseline) members: every other setting of a model with a baseline
        (`SweepConfig.baselines`, `nfebench sweep`) paired with that baseline, so each ratio to it
        comes from alternating rounds (the speedup row's ``config.teacher`` is the model itself)."""
        out = []
        for model, variant in self.config.baselines.items():
            mine = {k: p.point.variant for k, p in prepared.items() if p.point.model == model}
            base = [k for k, v in mine.items() if v == variant]
            out += [(k, base[0]) for k, v in mine.items() if base and v != variant]
        return out

    def _run_cell(self, cell: list[Point], built: dict[str, Built], infos: dict[str, ModelInfo], bar
                  ) -> dict[Point, tuple[Prepared, Series]]:
        """Time the points of one batch size and part together (pairs in alternating rounds)."""
        point0 = cell[0]
        bar.set_postfix_str(f"{'+'.join(dict.fromkeys(p.model for p in cell))} bs={point0.batch_size} "
                            f"decode={point0.part}{' compiled' if point0.compiled else ''}")
        prepared: dict[str, Prepared] = {}
        for p in cell:
            try:
                prep = self._prepare(built[p.model], infos[p.model], p)
                prepared[prep.label] = prep
            except InputError:
                raise
            except Exception as exc:  # e.g. out of memory making the decoder's latents
                self._failed(infos[p.model], p, exc, settings=self._point_settings(built[p.model], infos[p.model], p),
                             config=self._point_config(p, built[p.model].compiled_what))
                self._free()
        pairs = self._member_pairs(prepared) if point0.part != DECODER else []
        rounds = time_rounds({m: prep.fn for m, prep in prepared.items()}, self.clock, warmup=self.config.warmup,
                             budget=self.budget, pairs=pairs,
                             memory=self._memory({m: built[prep.point.model] for m, prep in prepared.items()}))
        out = {}
        for m, prep in prepared.items():
            series = rounds.members[m]
            if series.error is not None:
                self._failed(prep.info, prep.point, series.error, settings=prep.settings, config=prep.config)
            else:
                self.rows.timing(prep, series)
                self.rows.pyperf(benchmark_name(prep.settings, prep.label), series, prep.settings)
                out[prep.point] = (prep, series)
        timed = {prep.label for prep, _ in out.values()}
        for (fast, teacher), ps in rounds.pairs.items():
            if fast in timed and teacher in timed:
                bs = point0.batch_size
                self.rows.speedup(prepared[fast], prepared[teacher], [v * 1e3 / bs for v in ps.fast],
                                  [v * 1e3 / bs for v in ps.teacher], paired=True, stop=ps.stop, note=ps.note)
        bar.update(len(cell))
        del rounds
        self._free()
        return out

    def _best_throughput_rows(self, done: dict[Point, tuple[Prepared, Series]]) -> None:
        """Per pair of settings and part, the speed-up with each setting at its own best-throughput
        batch size (where either was timed at more than one): unpaired, from the points' calls."""
        labels = {prep.label: prep.point.model for prep, _ in done.values()}
        pairs = [(f, t) for fast, teacher in pairs_among(set(labels.values()))
                 for f in labels if labels[f] == fast for t in labels if labels[t] == teacher]
        for fast, teacher in pairs:
            for part in (GENERATOR, END_TO_END):
                mine = {m: {p.batch_size: v for p, v in done.items() if v[0].label == m and p.part == part}
                        for m in (fast, teacher)}
                if not (mine[fast] and mine[teacher]) or max(len(mine[fast]), len(mine[teacher])) < 2:
                    continue
                best = {m: min(points.values(), key=lambda pv: _median_per_image(*pv)) for m, points in mine.items()}
                (f_prep, f_series), (t_prep, t_series) = best[fast], best[teacher]
                f_ms = [v * 1e3 / f_prep.point.batch_size for v in f_series.values]
                t_ms = [v * 1e3 / t_prep.point.batch_size for v in t_series.values]
                note = (f"each model at its best-throughput batch size ({fast} b{f_prep.point.batch_size}, {teacher} "
                        f"b{t_prep.point.batch_size}); unpaired bootstrap over the two points' calls")
                self.rows.speedup(f_prep, t_prep, f_ms, t_ms, paired=False, stop="", note=note, batch_size=None)


def _median_per_image(prep: Prepared, series: Series) -> float:
    return summarise(series.values).median / prep.point.batch_size


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
