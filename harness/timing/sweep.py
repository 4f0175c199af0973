"""The benchmark sweep: a grid of (compile mode, model, batch size, part) points, each
timed in this process and written as result rows and as a pyperf benchmark.

Parts of a point, and how their rows are told apart (the ``decode`` column):

- ``decode=off``: the generator alone, ``sampler.generate(noise, labels)``.
- ``decode=on``: end to end, ``sampler.decode(sampler.generate(...))`` in one timed call.
- ``decode=only``: the SD-VAE decoder alone, ``sampler.decode(latents)`` on latents made
  before the clock starts. Its rows have ``model="sd-vae"``, ``family="sd-vae"``, the
  decoder's parameters and weights, and ``config.decoder_of`` naming the sampler that ran
  it. The decoder is the same network on the same latent shape for every SD-VAE model,
  and its compute does not depend on the latent values, so it is timed once per batch
  size (and compile mode) with the first latent model rather than once per model: on a
  2-core CPU one batch of 4 takes about 30 s, and timing it again per model would repeat
  the same measurement four times over.

Every point has `warmup` untimed calls, then up to `repeats` timed ones (fewer once they
add up to `max_time` seconds). Noise and labels come from `harness.seeding` with the
sweep's seed, made and moved to the device before the clock starts. A point that runs out
of memory becomes one ``status=oom`` row and the sweep goes on; any other failure becomes
one ``status=error`` row naming the exception (the command then exits 1). Rows are saved
after each one through `RunFile`, so an interrupted sweep keeps every finished point.

Each timed point gives the rows ms_per_batch, ms_per_image, images_per_s (value: median
over the timed calls; spread: median absolute deviation, blank with one call; n: timed
calls), peak_mem_mb, and mfu where the device's peak is known (`harness.timing.peaks`).
Each run also times a fixed calibration workload (``model="calibration"``,
``metric=calibration_ms``) so timings can be compared across machines as ratios to it.

Example::

    config = SweepConfig(models=("biflow-b2",), batch_sizes=(1, 4), decode="both")
    result = run_sweep(config, "results/runs/demo.csv", "results/runs/demo.pyperf.json")
"""

from __future__ import annotations

import gc
import io
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyperf
import torch

from adapters import get_spec, load_sampler, model_info
from harness.devices import device_name, resolve_device
from harness.errors import InputError
from harness.results import (CALIBRATION_MS, ERROR, IMAGES_PER_S, IMAGES_PER_S_PER_CHIP, MFU, MS_PER_BATCH,
                             MS_PER_IMAGE, OOM, PEAK_MEM_MB, RunFile, atomic_write)
from harness.sampler import ModelInfo, Sampler, weights_with_decoder
from harness.seeding import sample_labels, sample_noise
from harness.timing.clocks import Clock, Timing, clock_for, measure, median_mad
from harness.timing.memory import PeakMemory
from harness.timing.peaks import flops_per_image, mfu, peak_flops

B2_MODELS = ("biflow-b2", "itarflow-b2", "rf-b2", "meanflow-b2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DECODE_CHOICES = ("on", "off", "both")
COMPILE_CHOICES = ("none", "torch", "both")
DECODER_ID = "sd-vae"  # `model` of the decoder-only rows
CALIBRATION_ID = "calibration"
GENERATOR, END_TO_END, DECODER = "off", "on", "only"  # a point's part, as its `decode` column


@dataclass(frozen=True)
class SweepConfig:
    """What one `nfebench bench` run measures; the defaults are the CLI's defaults."""

    models: tuple[str, ...] = field(default=B2_MODELS, metadata={"help": "model ids"})
    batch_sizes: tuple[int, ...] = field(default=(1,), metadata={"help": "images per generate call"})
    decode: str = field(default="off", metadata={"help": "time with the SD-VAE decode: on, off or both"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA if present), cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "parameter and compute dtype"})
    compile: str = field(default="none",
                         metadata={"help": "torch.compile the generator and decoder: none, torch or both"})
    warmup: int = field(default=1, metadata={"help": "untimed calls before each point (compilation lands here)"})
    repeats: int = field(default=5, metadata={"help": "most timed calls per point"})
    max_time: float | None = field(
        default=None, metadata={"help": "stop a point's timed calls once they add up to this many seconds"})
    guidance: float | None = field(default=None, metadata={"help": "guidance scale; None: each model's default"})
    seed: int = field(default=0, metadata={"help": "seed of the noise and labels (harness.seeding)"})
    calibrate: bool = field(default=True, metadata={"help": "time the fixed calibration workload"})
    backend: str = field(default="torch", metadata={"help": "torch, or jax (the Flax ports, XLA-compiled)"})
    compile_backend: str = "inductor"  # torch.compile backend; tests use "eager"


# Named sweeps (tox -e bench / bench-gpu); explicit CLI options override their fields.
PRESETS: dict[str, dict[str, Any]] = {
    # About 5 minutes on 2 idle cores. The SD-VAE decode (4 s per image in float32) and
    # iTARFlow-B/2 (about 10 s per image: 2040 single-token steps plus the denoising pass)
    # dominate, so batch sizes stay at 1 and 2 and max_time cuts their points to a warm-up
    # and one or two timed calls (n says how many).
    "cpu": dict(models=B2_MODELS, batch_sizes=(1, 2), decode="both", device="cpu", dtype="float32",
                compile="none", warmup=1, repeats=5, max_time=6.0),
    # The CI regression gate (.ci/regress): generators only, batch 1, about a minute.
    "ci": dict(models=B2_MODELS, batch_sizes=(1,), decode="off", device="cpu", dtype="float32",
               compile="none", warmup=1, repeats=5, max_time=3.0),
    "gpu": dict(models=B2_MODELS, batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256), decode="both", device="cuda",
                dtype="bfloat16", compile="both", warmup=3, repeats=20, max_time=10.0),
    # tox -e bench-tpu: the JAX ports on every local TPU chip, the batch split over them.
    "tpu": dict(backend="jax", models=("biflow-b2", "itarflow-b2", "itarflow-xl2", "rf-b2", "meanflow-b2"),
                batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256), decode="both", device="tpu", dtype="bfloat16",
                compile="none", warmup=2, repeats=20, max_time=10.0),
}
BACKENDS = ("torch", "jax")


def validate(config: SweepConfig) -> None:
    """Raise InputError naming the first bad setting (before anything is built or timed)."""
    if not config.models:
        raise InputError("no models to benchmark; pass --models with comma-separated ids")
    for m in config.models:
        get_spec(m)  # unknown ids fail with the known ids and the nearest match
    if len(set(config.models)) != len(config.models):
        raise InputError(f"a model is listed twice in {','.join(config.models)}")
    if not config.batch_sizes:
        raise InputError("no batch sizes; pass --batch-sizes, e.g. 1,4")
    if len(set(config.batch_sizes)) != len(config.batch_sizes):
        raise InputError(f"a batch size is listed twice in {config.batch_sizes}")
    bad = [b for b in config.batch_sizes if not isinstance(b, int) or b <= 0]
    if bad:
        raise InputError(f"batch sizes must be positive integers, got {bad}")
    for name, value, choices in (("decode", config.decode, DECODE_CHOICES), ("dtype", config.dtype, tuple(DTYPES)),
                                 ("compile", config.compile, COMPILE_CHOICES)):
        if value not in choices:
            raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    if config.warmup < 0 or config.repeats < 1:
        raise InputError(f"need --warmup >= 0 and --repeats >= 1, got {config.warmup} and {config.repeats}")
    if config.compile != "none" and config.warmup < 1:
        raise InputError("--compile torch needs --warmup >= 1, so that compilation is not timed")
    if config.max_time is not None and config.max_time <= 0:
        raise InputError(f"--max-time must be positive, got {config.max_time}")
    if config.backend not in BACKENDS:
        raise InputError(f"unknown backend {config.backend!r}; choose one of {', '.join(BACKENDS)}")
    if config.backend == "jax":
        from adapters.jax.sampler import jax_devices

        if config.compile != "none":
            raise InputError("--compile applies to torch.compile; the JAX backend always compiles with XLA "
                             "(its compile time is a row of its own): drop --compile or pass --compile none")
        jax_devices(config.device)  # no such device: exit 2 with what to install or set
        return
    resolve_device(config.device)


def with_preset(preset: str | None, **overrides: Any) -> SweepConfig:
    """A `SweepConfig` from a preset's fields and then `overrides` (None values ignored)."""
    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = dict(PRESETS.get(preset, {}))
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return SweepConfig(**fields)


@dataclass(frozen=True)
class Point:
    """One timed measurement of the grid."""

    model: str
    compiled: bool
    batch_size: int
    part: str  # GENERATOR, END_TO_END or DECODER


def plan(config: SweepConfig, infos: dict[str, ModelInfo]) -> list[Point]:
    """The sweep's points in run order: per compile mode, per model (built once), per batch
    size: generator, end to end, then the decoder alone if no earlier model timed it."""
    modes = {"none": (False,), "torch": (True,), "both": (False, True)}[config.compile]
    parts = {"off": (GENERATOR,), "on": (END_TO_END,), "both": (GENERATOR, END_TO_END)}[config.decode]
    points, decoder_done = [], set()
    for compiled in modes:
        for m in config.models:
            info = infos[m]
            for bs in config.batch_sizes:
                points += [Point(m, compiled, bs, p) for p in parts]
                key = (compiled, bs, info.sample_shape, info.image_size)
                if END_TO_END in parts and info.space == "latent" and key not in decoder_done:
                    decoder_done.add(key)
                    points.append(Point(m, compiled, bs, DECODER))
    return points


def compile_sampler(sampler: Sampler, *, decoder: bool, backend: str = "inductor") -> str:
    """torch.compile the sampler's network (and its SD-VAE decoder) in place; returns what
    was compiled, for the rows' config.

    A sampler with a ``compile(backend=...)`` method compiles itself (a family whose
    sampling loop calls sub-modules directly knows best what to compile); otherwise its
    ``net`` module is compiled, which covers every ``net(...)`` call of the loop.
    """
    if callable(getattr(sampler, "compile", None)):
        what = str(sampler.compile(backend=backend) or "sampler.compile()")
    elif isinstance(getattr(sampler, "net", None), torch.nn.Module):
        sampler.net.compile(backend=backend, dynamic=False)
        what = "net"
    else:
        raise InputError(f"{sampler.info.name}: --compile torch needs a torch sampler with a `net` module "
                         f"or a compile() method; run it with --compile none")
    vae = getattr(getattr(sampler, "decoder", None), "vae", None)
    if decoder and vae is not None:
        vae.decoder.compile(backend=backend, dynamic=False)  # AutoencoderKL.decode calls vae.decoder(z)
        what += "+vae.decoder"
    return what


def calibration_workload(device: torch.device) -> tuple[Callable[[], Any], str]:
    """A fixed float32 matmul loop of a few hundred ms on its device type, and its description."""
    n, reps = (512, 40) if device.type == "cpu" else (8192, 100)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)

    def work() -> torch.Tensor:
        c = a
        for _ in range(reps):
            c = torch.mm(b, c) * (1.0 / n**0.5)  # rescaled so values stay finite
        return c

    return work, f"float32 matmul {n}x{n} x{reps}"


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    suite: pyperf.BenchmarkSuite | None
    errors: list[str]


class _Runner:
    """Runs the planned points, one sampler at a time, saving rows as it goes (PyTorch;
    `harness.timing.jax_runner` overrides the backend-specific steps for JAX)."""

    backend = "torch"

    @property
    def timer_name(self) -> str:
        return "CUDA events" if self.platform == "cuda" else "time.perf_counter"

    def __init__(self, config: SweepConfig, run: RunFile, progress: bool):
        self.config = config
        self.run = run
        self.device = resolve_device(config.device)
        self.platform = self.device.type
        self.dtype = DTYPES[config.dtype]
        self.clock: Clock = clock_for(self.device)
        self.device_name = device_name(self.device)
        tf32 = self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
        self.peak = peak_flops(self.device_name, config.dtype, tf32=tf32)
        self.benchmarks: list[pyperf.Benchmark] = []
        self.errors: list[str] = []
        self.progress = progress

    # --- rows -------------------------------------------------------------------------

    def _settings(self, info: ModelInfo | None, point: Point, weights: str, **over: Any) -> dict[str, Any]:
        s = dict(backend=self.backend, device=self.platform, device_name=self.device_name, dtype=self.config.dtype,
                 compiled=point.compiled, batch_size=point.batch_size, decode=point.part,
                 guidance=self.config.guidance, seed=self.config.seed, weights=weights, model=point.model)
        if info is not None:
            s.update(family=info.family, params=info.params, nfe=info.nfe)
        s.update(over)
        return s

    def _timing_rows(self, settings: dict[str, Any], config: dict[str, Any], timing: Timing,
                     peak_mb: float | None, flops_per_batch: float, chips: int = 1) -> None:
        """The point's rows; `chips` > 1 when the batch was split over that many devices
        (the MFU peak is then theirs together, and images/s per chip gets a row)."""
        bs = settings["batch_size"]
        per_call = {MS_PER_BATCH: [v * 1e3 for v in timing.values],
                    MS_PER_IMAGE: [v * 1e3 / bs for v in timing.values],
                    IMAGES_PER_S: [bs / v for v in timing.values]}
        if self.backend == "jax":
            per_call[IMAGES_PER_S_PER_CHIP] = [bs / v / chips for v in timing.values]
            config = {**config, "chips": chips}
        for metric, values in per_call.items():
            med, mad = median_mad(values)
            self.run.add(**settings, metric=metric, value=med, spread=mad if timing.n > 1 else None,
                         n=timing.n, config=config)
        if peak_mb is not None:
            self.run.add(**settings, metric=PEAK_MEM_MB, value=peak_mb, n=timing.n, config=config)
        if self.peak is not None and flops_per_batch > 0:
            peak = self.peak * chips
            self.run.add(**settings, metric=MFU, value=mfu(flops_per_batch, timing.median, peak), n=timing.n,
                         config={**config, "flops_per_batch": flops_per_batch, "peak_flops": peak})

    def _pyperf(self, name: str, timing: Timing, metadata: dict[str, Any]) -> None:
        meta = {"name": name, "unit": "second", "loops": 1,
                "timer": self.timer_name,
                "nfebench_run_id": self.run.provenance["run_id"], "git_sha": self.run.provenance["git_sha"]}
        meta.update({k: v for k, v in metadata.items() if isinstance(v, (int, float, str)) and v != ""})
        run = pyperf.Run(list(timing.values), warmups=[(1, w) for w in timing.warmups], metadata=meta)
        self.benchmarks.append(pyperf.Benchmark([run]))

    # --- measuring --------------------------------------------------------------------

    def _measure(self, fn: Callable[[], Any]) -> tuple[Timing, float | None]:
        """The point's timing, and its peak memory over the timed calls (not the warm-up)."""
        c = self.config
        mem = PeakMemory(self.device)
        timing = measure(fn, self.clock, warmup=c.warmup, repeats=c.repeats, max_time=c.max_time, timed_region=mem)
        return timing, mem.mb

    def calibrate(self) -> None:
        work, description = calibration_workload(self.device)
        timing = measure(work, self.clock, warmup=1, repeats=5)
        med, mad = median_mad([v * 1e3 for v in timing.values])
        row = dict(model=CALIBRATION_ID, backend=self.backend, device=self.platform, device_name=self.device_name,
                   dtype="float32", compiled=False, seed=0, metric=CALIBRATION_MS, value=med, spread=mad, n=timing.n,
                   config={"workload": description, "threads": torch.get_num_threads()})
        self.run.add(**row)
        self._pyperf(CALIBRATION_ID, timing, {"workload": description})

    def run_points(self, points: list[Point], infos: dict[str, ModelInfo]) -> None:
        from tqdm import tqdm

        bar = tqdm(total=len(points), unit="point", desc="nfebench bench", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        try:
            # consecutive points of one (model, compile mode) share one build
            for (model, compiled), group in itertools.groupby(points, key=lambda p: (p.model, p.compiled)):
                self._run_model(model, compiled, list(group), infos[model], bar)
        finally:
            bar.close()

    def _run_model(self, model: str, compiled: bool, points: list[Point], info: ModelInfo, bar) -> None:
        c = self.config
        decoding = any(p.part != GENERATOR for p in points)
        bar.set_postfix_str(f"building {model}")
        try:
            sampler = load_sampler(model, device=self.device, dtype=self.dtype)
            dec_weights = getattr(sampler, "decoder_weights", None) if decoding else None  # builds the VAE now
            what = compile_sampler(sampler, decoder=decoding, backend=c.compile_backend) if compiled else None
        except InputError:
            raise
        except Exception as exc:  # the model cannot be built: one row says why, its points are skipped
            self._failed(info, Point(model, compiled, points[0].batch_size, GENERATOR), exc)
            bar.update(len(points))
            _free(self.device)  # after the except block, so the traceback's tensors are gone
            return
        try:
            for point in points:
                bar.set_postfix_str(f"{model} bs={point.batch_size} decode={point.part}"
                                    f"{' compiled' if compiled else ''}")
                self._run_point(sampler, info, point, dec_weights, what)
                bar.update(1)
        finally:
            del sampler
            _free(self.device)

    def _run_point(self, sampler: Sampler, info: ModelInfo, point: Point, dec_weights: str | None,
                   compiled_what: str | None) -> None:
        c, bs = self.config, point.batch_size
        latent = info.space == "latent"
        weights = weights_with_decoder(info.weights, dec_weights if point.part == END_TO_END and latent else None)
        settings = self._settings(info, point, weights)
        if point.part == DECODER:
            vae = getattr(sampler, "decoder", None)
            settings = self._settings(None, point, str(dec_weights), model=DECODER_ID, family=DECODER_ID,
                                      params=getattr(vae, "params", None), nfe=1)
        config = {"warmup": c.warmup, "repeats": c.repeats, "max_time": c.max_time,
                  "threads": torch.get_num_threads(), "timer": type(self.clock).__name__}
        if point.part == DECODER:
            config["decoder_of"] = point.model
        if compiled_what:
            config["compiled"] = compiled_what
        timing = None
        try:
            noise = sample_noise(c.seed, range(bs), info.sample_shape).to(self.device, self.dtype)
            labels = sample_labels(c.seed, range(bs), info.num_classes)
            labels = None if labels is None else labels.to(self.device)
            if point.part == GENERATOR:
                fn = lambda: sampler.generate(noise, labels, guidance=c.guidance)  # noqa: E731
            elif point.part == END_TO_END:
                fn = lambda: sampler.decode(sampler.generate(noise, labels, guidance=c.guidance))  # noqa: E731
            else:
                latents = sampler.generate(noise, labels, guidance=c.guidance)
                fn = lambda: sampler.decode(latents)  # noqa: E731
            timing, peak_mb = self._measure(fn)
        except InputError:
            raise
        except Exception as exc:
            self._failed(info, point, exc, settings=settings, config=config)
        if timing is None:
            _free(self.device)  # outside the except block, so the traceback's tensors are gone
            return
        flops = bs * flops_per_image(info, generator=point.part != DECODER, decode=point.part != GENERATOR)
        self._timing_rows(settings, config, timing, peak_mb, flops)
        self._pyperf(_benchmark_name(settings), timing, settings)

    @staticmethod
    def _is_oom(exc: Exception) -> bool:
        return isinstance(exc, torch.cuda.OutOfMemoryError)  # is torch.OutOfMemoryError: CUDA and CPU

    def _failed(self, info: ModelInfo, point: Point, exc: Exception, *, settings: dict[str, Any] | None = None,
                config: dict[str, Any] | None = None) -> None:
        """One row for a point that did not finish: ``oom`` if it ran out of memory (the sweep
        expects that at large batch sizes), else ``error``, which the command reports."""
        settings = settings or self._settings(info, point, info.weights)
        if self._is_oom(exc):
            self.run.add(**settings, metric=MS_PER_BATCH, status=OOM, notes=_first_line(exc), config=config)
            return
        note = f"{type(exc).__name__}: {_first_line(exc)}"
        self.errors.append(f"{point.model} bs={point.batch_size} decode={point.part}: {note}")
        self.run.add(**settings, metric=MS_PER_BATCH, status=ERROR, notes=note, config=config)


def _benchmark_name(s: dict[str, Any]) -> str:
    """pyperf benchmark name: the settings that tell points apart within a run, and match the
    same point across runs (so `python -m pyperf compare_to old.json new.json` pairs them)."""
    return (f"{s['model']}/bs{s['batch_size']}/decode-{s['decode']}/{s['dtype']}/"
            f"{'compiled' if s['compiled'] else 'eager'}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_sweep(config: SweepConfig, out: str | Path, pyperf_json: str | Path | None = None, *,
              progress: bool = True, provenance: dict[str, Any] | None = None) -> SweepResult:
    """Measure every point of `config`, saving rows to the run file `out` as they come.

    Args:
        config: the grid and timing settings (`validate` is called first).
        out: the CSV run file to create (an existing file is refused, never overwritten).
        pyperf_json: where to dump the pyperf `BenchmarkSuite` (also after an interruption,
            with the points finished so far); None writes none.
        progress: show a progress bar on stderr.
        provenance: the run's provenance columns (`harness.results.new_provenance()`,
            made here if None); pass it to name `out` after its run id.

    Returns:
        a `SweepResult` with the rows, the pyperf suite and one line per failed point.

    Example::

        >>> cfg = with_preset("cpu", models=("rf-b2",), batch_sizes=(1,), decode="off")
        >>> res = run_sweep(cfg, "results/runs/rf.csv", "results/runs/rf.pyperf.json")
        >>> {r["metric"] for r in res.rows} >= {"ms_per_image", "images_per_s"}
        True
    """
    validate(config)
    out = Path(out)
    if out.suffix != ".csv":
        raise InputError(f"the run file must be a .csv file, got {out}")
    if out.exists():
        raise InputError(f"run file {out} already exists; choose a new --out path (runs are never overwritten)")
    run = RunFile(out, provenance)
    if pyperf_json is not None and Path(pyperf_json).exists():
        raise InputError(f"pyperf file {pyperf_json} already exists; choose a new --pyperf-json path")
    if config.backend == "jax":
        from harness.timing.jax_runner import JaxRunner as runner_class
    else:
        runner_class = _Runner
    runner = runner_class(config, run, progress)
    infos = {m: model_info(m) for m in config.models}
    points = plan(config, infos)
    try:
        if config.calibrate:
            runner.calibrate()
        runner.run_points(points, infos)
    finally:
        suite = pyperf.BenchmarkSuite(runner.benchmarks) if runner.benchmarks else None
        if suite is not None and pyperf_json is not None:
            buf = io.StringIO()
            suite.dump(buf, compact=False)
            atomic_write(pyperf_json, buf.getvalue())
    return SweepResult(run.rows, suite, runner.errors)

