"""The sweep's driver: what a sweep is asked (`SweepRequest`), every check made before any work
(`plan_sweep`, which writes nothing), and the run (`run_planned`): per model, each setting's
quality pass (`harness.sweep.quality`) and then the timing of its settings against its
baseline (`harness.sweep.timing`), every result kept in the work dir (`harness.sweep.workdir`)
and the run file and pyperf file rewritten from it after each setting.

A rerun with the same work dir resumes: settings with rows are reported from them, bit for bit;
a quality pass resumes shard by shard; a model's settings not yet timed are timed (with its
baseline, whose rows are kept from its first timing: the new rounds give the ratios only). A
rerun with another grid extends the sweep: it says which settings it adds, and the run file
holds every setting the sweep has measured. A work dir of another sweep (other models, weights,
seed, N, reference, metrics, timing budget, batch sizes, device type or dtype) is refused.

Example::

    request = SweepRequest(models=("rf-mini",), grid=("num_steps=1,2,4,8",), num_samples=200,
                           reference="digits-heldout-stats.npz", seed=0, batch_sizes=(1, 64),
                           device="cpu", work_dir="runs/rf-steps", out="results/local/rf-steps.csv")
    result = run_sweep(request)
    result.added, result.out
"""

from __future__ import annotations

import gc
import io
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyperf

from adapters import get_spec, load_sampler
from adapters.api.config import option
from adapters.api.errors import InputError
from harness.evaluate import (
    EvalConfig,
    MetricOptions,
    check_reference,
    evaluate_sampler,
    make_plan,
    open_extractors,
    open_source,
    parse_metrics,
    source_digest,
)
from harness.results import atomic_write, new_provenance, rows_to_csv
from harness.settings import (
    json_options,
    options_text,
    parse_checkpoints,
    parse_option_sets,
    parse_overrides,
)
from harness.sweep.grid import (
    GridSetting,
    expand_grid,
    parse_axis,
    parse_baselines,
    stored_setting,
)
from harness.sweep.quality import MeasuredSampler, cost_rows, pass_weights, quality_rows
from harness.sweep.timing import RowBuffer, SettingTimer, check_timing, suite_json
from harness.sweep.workdir import SweepDir
from harness.timing.config import DTYPES, SweepConfig
from harness.timing.stats import DEFAULT_CI_TARGET
from harness.workdir import DEFAULT_SHARD_SIZE, RESULT, WorkDir, shard_ranges

LOCAL_DIR = Path("results/local")  # git-ignored, as bench's runs
DEFAULT_MAX_SETTINGS = 64
SWEEP_BASELINE = "sweep baseline"  # `config.basis` of the ratio rows (the sweep spec)
NOT_GATED = ("not gated: a sweep measures every setting's quality itself (its quality rows, same seed, N, noise "
             "and labels)")


@dataclass(frozen=True)
class SweepRequest:
    """What one ``nfebench sweep`` is asked to do; the defaults are the CLI's. Grids, options,
    baselines, checkpoints and overrides are their command-line texts (`harness.sweep.grid`,
    `harness.settings`), checked by `plan_sweep`.

    Example::

        SweepRequest(models=("biflow-mini",), grid=("guidance=0,0.5,1,2",), num_samples=200,
                     reference="digits-heldout-stats.npz", seed=0)
    """

    models: tuple[str, ...] = option((), "model ids")
    num_samples: int = option(0, "N, the samples of every setting's quality pass")
    reference: str = option("", "reference set, as nfebench eval --ref takes it")
    seed: int = option(0, "sample i of every setting from the noise and label of (seed, i)")
    grid: tuple[str, ...] = option((), "--grid [MODEL:]AXIS=V1,V2,... axes, one per value")
    options: tuple[str, ...] = option((), "--options [MODEL:]key=value,... settings, one per value")
    baselines: tuple[str, ...] = option((), "--baseline [MODEL:]key=value,...: the setting the others are timed "
                                            "against (default: each model's first)")
    checkpoints: tuple[str, ...] = option((), "--checkpoint [MODEL=]PATH values (others: random weights)")
    overrides: tuple[str, ...] = option((), "--set [MODEL:]key=value,... config overrides")
    metrics: str = option("fid", "quality metrics, as nfebench eval --metrics")
    metric_options: MetricOptions = option(MetricOptions(), "mode, KID subsets, bootstrap replicates, weight files")
    eval_batch_size: int | None = option(None, "images per call of the quality pass (default: the largest batch size)")
    shard_size: int = option(DEFAULT_SHARD_SIZE, "samples per shard of a quality pass, the unit of resumption")
    batch_sizes: tuple[int, ...] = option((1,), "batch sizes each setting is timed at")
    decode: str = option("on", "timed with the decode (on: the cost of an image; = off for pixel models), off, both")
    device: str = option("auto", "device of sampling, timing and the feature networks")
    dtype: str = option("float32", "parameter and compute dtype of the samplers")
    warmup: int = option(1, "untimed calls before each timed point")
    repeats: int = option(20, "most timed calls (rounds) per point")
    max_time: float | None = option(10.0, "seconds of timed calls per point (a pair with the baseline: twice that)")
    ci_target: float = option(DEFAULT_CI_TARGET, "stop a point once its median's interval is this tight")
    calibrate: bool = option(True, "time the calibration workload before and after the timings")
    max_settings: int = option(DEFAULT_MAX_SETTINGS, "most settings without --yes")
    confirmed: bool = option(False, "run a grid of more than max_settings settings")
    work_dir: str | Path | None = option(None, "the sweep's work dir (resumable); None: a temporary folder")
    out: str | Path | None = option(None, "the run file (default results/local/sweep-<name>-<device>-<run id>.csv)")
    pyperf_json: str | Path | None = option(None, "the pyperf file (default: the run file's name, .pyperf.json)")
    name: str | None = option(None, "the sweep's name in the default run file name (default: the models)")
    progress: bool = option(True, "one progress bar over settings and samples")


@dataclass
class SweepPlan:
    """A checked request: everything `run_planned` needs, nothing written yet."""

    request: SweepRequest
    settings: dict[str, list[GridSetting]]  # model -> its settings, baseline first
    baselines: dict[str, GridSetting]
    eval_config: EvalConfig
    reference: Any
    template: SweepConfig
    checkpoints: dict[str, str]
    overrides: dict[str, dict[str, Any]]
    nfe: dict[str, int]  # setting label -> NFE
    fixed: dict[str, Any]
    stored: dict[str, Any] | None  # the work dir's manifest when resuming
    run_id: str
    out: Path
    pyperf_json: Path
    skipped: list[str]  # metrics that cannot be computed here, and why
    notes: list[str] = field(default_factory=list)


@dataclass
class SweepResult:
    """What a sweep did: its rows (the run file's), where they are, what it added and kept."""

    rows: list[dict[str, Any]]
    out: Path
    pyperf_json: Path | None
    run_id: str
    added: list[str]
    kept: list[str]
    errors: list[str]
    skipped: list[str]


def _check_models(models: tuple[str, ...]) -> None:
    if not models:
        raise InputError("no models to sweep; pass --models with comma-separated ids")
    if len(set(models)) != len(models):
        raise InputError(f"a model is listed twice in {','.join(models)}")
    for m in models:
        get_spec(m)  # an unknown id names the known ones


def _with_baseline_first(settings: list[GridSetting], baseline: GridSetting) -> list[GridSetting]:
    return [baseline] + [s for s in settings if s.label != baseline.label]


def _check_output(path: Path, what: str, stored: dict | None, default_dir: bool) -> None:
    if not default_dir and not path.parent.is_dir():
        raise InputError(f"{what} {path}: the folder {path.parent} does not exist; create it or choose another path")
    if path.exists() and (stored is None or str(path.resolve()) not in stored["outputs"]):
        raise InputError(f"{what} {path} already exists and is not this sweep's; choose a new path (runs are never "
                         f"overwritten)")


def plan_sweep(request: SweepRequest) -> SweepPlan:
    """Every check of `request` before any work (InputError naming what is wrong); writes nothing.

    The models and their settings (grid, options, baselines, the family's axes and option
    types), the grid's size against ``max_settings``, each setting's timing (device, batch
    sizes, checkpoint, options' values, NFE), the metrics and reference (and which metrics
    cannot be computed here), the work dir (another sweep's is refused) and the output paths.
    """
    from harness.devices import resolve_device

    r = request
    models = tuple(r.models)
    _check_models(models)
    checkpoints = parse_checkpoints(r.checkpoints, models)
    overrides = parse_overrides(r.overrides, models)
    # On the meta device: the family's options and defaults, the checkpoint's fit and digest, no memory.
    samplers = {m: load_sampler(m, checkpoint=checkpoints.get(m), device="meta", **overrides.get(m, {}))
                for m in models}
    grid = expand_grid(models, [parse_axis(t, models) for t in r.grid], parse_option_sets(r.options, models),
                       samplers)
    total = sum(len(v) for v in grid.values())
    if r.max_settings < 1:
        raise InputError(f"--max-settings must be a positive integer, got {r.max_settings}")
    if total > r.max_settings and not r.confirmed:
        counts = ", ".join(f"{m} {len(v)}" for m, v in grid.items())
        raise InputError(f"the grid makes {total} settings ({counts}), more than --max-settings {r.max_settings}; "
                         f"pass --yes to run them all, or a smaller grid")
    baselines, named = parse_baselines(r.baselines, grid, samplers)
    metrics = parse_metrics(r.metrics)
    metric_options = r.metric_options.check()
    reference = open_source(r.reference)
    check_reference(reference, make_plan(metrics, metric_options), metric_options.mode)
    device = resolve_device(r.device)
    if not r.batch_sizes:
        raise InputError("no batch sizes; pass --batch-sizes, e.g. 1,64")
    eval_config = EvalConfig(num_samples=r.num_samples, batch_size=r.eval_batch_size or max(r.batch_sizes),
                             seed=r.seed, metrics=metrics, options=metric_options, device=str(device),
                             shard_size=r.shard_size, progress=False).check()
    if r.dtype not in DTYPES:
        raise InputError(f"unknown dtype {r.dtype!r}; choose one of {', '.join(DTYPES)}")
    fixed = {"models": list(models), "weights": {m: samplers[m].info.weights for m in models},
             "overrides": {m: json_options(o) for m, o in overrides.items()}, "seed": r.seed,
             "num_samples": r.num_samples, "reference": source_digest(reference), "metrics": list(metrics),
             "mode": metric_options.mode, "metric_options": metric_options.settings(), "shard_size": r.shard_size,
             "batch_sizes": list(r.batch_sizes), "decode": r.decode, "device": device.type, "dtype": r.dtype,
             "timing": {"warmup": r.warmup, "repeats": r.repeats, "max_time": r.max_time, "ci_target": r.ci_target}}
    stored = SweepDir(r.work_dir, fixed).check() if r.work_dir is not None else None
    notes = []
    for m in models if stored is not None else ():
        kept = stored_setting(m, stored["baselines"][m])
        if kept.label == baselines[m].label:
            continue
        if m in named:
            raise InputError(f"--baseline: this sweep times {m}'s settings against {kept.label}, fixed when it "
                             f"started; drop --baseline for {m} or use a new --work-dir")
        notes.append(f"{m}: its settings are timed against {kept.label}, the baseline fixed when this sweep started")
        baselines[m] = next((s for s in grid[m] if s.label == kept.label), kept)
    template = SweepConfig(models=models, batch_sizes=tuple(r.batch_sizes), decode=r.decode, device=str(device),
                           dtype=r.dtype, compile="none", warmup=r.warmup, repeats=r.repeats, max_time=r.max_time,
                           ci_target=r.ci_target, seed=r.seed, calibrate=False, checkpoints=checkpoints,
                           overrides=overrides, quality=False, setting_guidance=True)
    nfe = {}
    for m in models:
        grid[m] = _with_baseline_first(grid[m], baselines[m])
        planned = check_timing(template, m, grid[m])
        nfe.update({s.label: planned[(m, i)].nfe for i, s in enumerate(grid[m])})
    # The networks are loaded once here, last: a metric whose weights are missing is said now, a
    # reference of another network is refused, and a request none of whose metrics can be computed
    # fails, all before any work.
    extractors, _, skipped = open_extractors(metrics, metric_options, str(device))
    check_reference(reference, make_plan(metrics, metric_options), metric_options.mode, extractors)
    del extractors
    run_id = stored["run_id"] if stored else new_provenance()["run_id"]
    name = r.name or "+".join(models)
    out = Path(r.out) if r.out else LOCAL_DIR / f"sweep-{name}-{device.type}-{run_id}.csv"
    if out.suffix != ".csv":
        raise InputError(f"the run file must be a .csv file, got {out}")
    pyperf_json = Path(r.pyperf_json) if r.pyperf_json else out.with_name(out.stem + ".pyperf.json")
    _check_output(out, "--out", stored, default_dir=r.out is None)
    _check_output(pyperf_json, "--pyperf-json", stored, default_dir=r.out is None and r.pyperf_json is None)
    return SweepPlan(r, grid, baselines, eval_config, reference, template, checkpoints, overrides, nfe, fixed, stored,
                     run_id, out, pyperf_json, skipped, notes)


def _renamed(bench: pyperf.Benchmark, name: str) -> pyperf.Benchmark:
    runs = [pyperf.Run(run.values, warmups=run.warmups, metadata={**run.get_metadata(), "name": name},
                       collect_metadata=False) for run in bench.get_runs()]
    return pyperf.Benchmark(runs)


def _benchmarks(text: str | None) -> list[pyperf.Benchmark]:
    return pyperf.BenchmarkSuite.load(io.StringIO(text)).get_benchmarks() if text else []


def _write_outputs(sd: SweepDir, out: Path, pyperf_json: Path) -> list[dict[str, Any]]:
    """The run file and pyperf file from what the work dir holds: each setting in the order it
    joined (quality rows, then timing rows), then the calibration rows of each process."""
    rows, benches = [], []
    for e in sd.entries():
        rows += e.quality() or []
        timing = e.timing()
        if timing:
            rows += timing["rows"]
            benches += _benchmarks(timing["pyperf"])
    for i, run in enumerate(sd.calibration()):
        rows += run["rows"]
        # a calibration per process; the names of a second one's benchmarks say which process
        benches += [b if i == 0 else _renamed(b, f"{b.get_name()}/{i + 1}") for b in _benchmarks(run["pyperf"])]
    if rows:
        atomic_write(out, rows_to_csv(rows))
    if benches:
        atomic_write(pyperf_json, suite_json(benches))
    return rows


def _tagged(rows: list[dict[str, Any]], sweep: dict[str, Any], *, basis: bool = False) -> list[dict[str, Any]]:
    """`rows` with the sweep's keys in their config; ratio rows name their basis, and the
    quality gate's 'not checked' says why (the sweep measures quality itself)."""
    out = []
    for row in rows:
        config = {**(row.get("config") or {}), "sweep": sweep}
        if basis and row.get("metric") == "speedup":
            config["basis"] = SWEEP_BASELINE
        if row.get("quality") == "unverified" and "quality_check" in config:
            config["quality_check"] = NOT_GATED
        out.append({**row, "config": config})
    return out


def _done_images(entry, config: EvalConfig) -> int:
    """Samples of a setting's quality pass already in its eval work dir (for the progress bar)."""
    if (entry.eval_dir / RESULT).is_file():
        return config.num_samples
    if not entry.eval_dir.is_dir():
        return 0
    shards = shard_ranges(config.num_samples, config.shard_size)
    return sum(len(idx) for idx, done in zip(shards, WorkDir(entry.eval_dir, {}).done(shards)) if done)


def run_planned(plan: SweepPlan, log: Callable[[str], None] = print) -> SweepResult:
    """Run a checked sweep (see the module text); `log` gets what it adds, keeps and skips."""
    r = plan.request
    with tempfile.TemporaryDirectory(prefix="nfebench-sweep-") as tmp:
        sd = SweepDir(r.work_dir if r.work_dir is not None else tmp, plan.fixed)
        sd.manifest = plan.stored
        plan.out.parent.mkdir(parents=True, exist_ok=True)
        plan.pyperf_json.parent.mkdir(parents=True, exist_ok=True)
        sd.create(plan.run_id, {m: dict(b.options) for m, b in plan.baselines.items()},
                  [str(plan.out.resolve()), str(plan.pyperf_json.resolve())])
        known = [e.label for e in sd.entries()]
        ordered = [s for m in r.models for s in plan.settings[m]]
        added = [s.label for s in ordered if s.label not in known]
        for s in ordered:
            sd.register(s.model, dict(s.options))
        for line in plan.notes + plan.skipped:
            log(line)
        if plan.stored is not None:
            log(f"sweep {plan.run_id} in {sd.path}: adds {len(added)} setting(s)"
                f"{': ' + ', '.join(added) if added else ''}; {len(known)} from earlier runs")
        errors = _run_settings(plan, sd, log)
        rows = _write_outputs(sd, plan.out, plan.pyperf_json)
    return SweepResult(rows, plan.out, plan.pyperf_json if plan.pyperf_json.exists() else None, plan.run_id, added,
                       known, errors, plan.skipped)


def _run_settings(plan: SweepPlan, sd: SweepDir, log: Callable[[str], None]) -> list[str]:
    """Per model: the quality pass of each setting without rows, then the timing of those not yet timed."""
    from tqdm import tqdm

    from harness.devices import device_name, resolve_device

    r, config = plan.request, plan.eval_config
    device = resolve_device(r.device)
    provenance = {**new_provenance(), "run_id": plan.run_id}
    timer = SettingTimer(plan.template, provenance, calibrate=r.calibrate)
    pending = [s for m in r.models for s in plan.settings[m] if sd.entry(s.model, dict(s.options)).quality() is None]
    bar = tqdm(total=len(pending) * config.num_samples, unit="img", desc="nfebench sweep", file=sys.stderr,
               disable=not r.progress, dynamic_ncols=True,
               initial=sum(_done_images(sd.entry(s.model, dict(s.options)), config) for s in pending))
    errors: list[str] = []
    where = {"device": device.type, "device_name": device_name(device), "dtype": r.dtype}
    try:
        for m in r.models:
            sweep = {"id": plan.run_id, "baseline": options_text(plan.baselines[m].options)}
            todo = [s for s in plan.settings[m] if s in pending]
            sampler = load_sampler(m, checkpoint=plan.checkpoints.get(m), device=device, dtype=DTYPES[r.dtype],
                                   **plan.overrides.get(m, {})) if todo else None
            for s in todo:
                bar.set_postfix_str(f"{pending.index(s) + 1}/{len(pending)} {s.label}")
                entry = sd.entry(m, dict(s.options))
                measured = MeasuredSampler(sampler, s, entry, device=device, bar=bar)
                values, _, ctx = evaluate_sampler(
                    measured, plan.reference, config, guidance=s.guidance, work_dir=entry.eval_dir,
                    settings={"overrides": json_options(plan.overrides.get(m, {})), "backend": "torch",
                              "options": s.json(), "dtype": r.dtype})
                common = dict(setting=s, info=sampler.info, weights=pass_weights(sampler), nfe=plan.nfe[s.label],
                              config=config, **where)
                rows = quality_rows(values, ctx, overrides=plan.overrides.get(m, {}), **common)
                costs, missing = cost_rows(entry.throughput(), **common)
                for line in missing:
                    log(line)
                buffer = RowBuffer(provenance)
                entry.write_quality(_tagged([buffer.add(**row) for row in rows + costs], sweep))
                _write_outputs(sd, plan.out, plan.pyperf_json)
            del sampler
            gc.collect()
            errors += _time_model(plan, sd, timer, m, sweep, bar, log)
        end = timer.finish()
        if end is not None:
            sd.add_calibration(_tagged(end[0], {"id": plan.run_id}), end[1])
    finally:
        bar.close()
    return errors


def _time_model(plan: SweepPlan, sd: SweepDir, timer: SettingTimer, model: str, sweep: dict, bar, log) -> list[str]:
    """Time `model`'s settings that have no timing rows, against its baseline; store their rows
    unless a point failed (a rerun then times them again)."""
    base = plan.baselines[model]
    untimed = [s for s in plan.settings[model] if sd.entry(model, dict(s.options)).timing() is None]
    if not untimed:
        return []
    timed_before = sd.entry(model, dict(base.options)).timing() is not None
    members = _with_baseline_first(untimed, base)
    bar.set_postfix_str(f"timing {model}: {len(members)} setting(s) at batch {','.join(map(str, plan.template.batch_sizes))}")
    timed = timer.time_model(model, members)
    if timed.errors:
        for line in timed.errors:
            log(f"failed {line}")
        log(f"{model}: its timings are not stored; rerun to time them again")
        return timed.errors
    for s in members:
        if s.label == base.label and timed_before:
            continue  # the baseline's own rows are kept from its first timing; these rounds gave the ratios
        sd.entry(model, dict(s.options)).write_timing(_tagged(timed.rows.get(s.label, []), sweep, basis=True),
                                                      suite_json(timed.benchmarks.get(s.label, [])))
    _write_outputs(sd, plan.out, plan.pyperf_json)
    return []


def run_sweep(request: SweepRequest, log: Callable[[str], None] = print) -> SweepResult:
    """`plan_sweep` then `run_planned`: every check before any work, then the sweep.

    Args:
        request: what to sweep (`SweepRequest`).
        log: where messages go (settings added, metrics skipped, failures).

    Returns:
        a `SweepResult`: the run file's rows, its path and the pyperf file's, the settings added
        and kept, failed points, skipped metrics.
    """
    return run_planned(plan_sweep(request), log)
