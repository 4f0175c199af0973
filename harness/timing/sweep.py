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
  2-core CPU one image takes about 3.6 s.

``decode_batch_sizes`` limits the ``on`` and ``only`` points to some batch sizes (the
``cpu`` preset decodes at batch 1 only: every decoded image costs seconds there).

Settings: each model may have a checkpoint (``checkpoints``), config overrides (``overrides``)
and several sampler option settings (``options``, passed to ``generate``); each setting of a
model is timed as a point of its own (``config.options`` in its rows, its name
`harness.settings.label` in the tables and the pyperf file), all from one build of the model.
Rows name the checkpoint's fingerprint in ``weights`` and carry the NFE of what runs
(`harness.settings.nfe_of`: the guidance and options used). A sampler that reports its
decoding passes in ``last_stats`` (TARFlow) has them in ``config``: ``iterations_mean``,
``iterations_max`` and ``iterations_per_block`` of the timed batch (sequential decoding: T - 1
per block).

Quality (`harness.quality`): before a build group is timed, each of its settings that is not
its own reference setting (float32, eager, exact decoding) is checked against it on the same
noise and labels; the deviation rows (and with ``quality_ref`` FID rows) are written then,
and every row of the setting carries the verdict in ``quality`` (``reference`` for the
reference setting itself).

Timing (`harness.timing.adaptive`): every point has `warmup` untimed calls, then timed calls
until the median's 95% interval has a half-width of at most ``ci_target`` x the median, or
its calls add up to ``max_time`` seconds, or ``repeats`` calls; at least 5 unless one call
exceeds ``max_time`` (the rows' notes say so). The two models of a pair (`harness.pairs`:
each fast model and its teacher), when both are in ``models``, are built together and timed
in alternating rounds at each batch size and part, so their ratio is measured as a ratio and
their own rows come from the same calls. Noise and labels come from `adapters.api.seeding` with
the sweep's seed, made and moved to the device before the clock starts. A point that runs out
of memory becomes one ``status=oom`` row and the sweep goes on; any other failure becomes
one ``status=error`` row naming the exception (the command then exits 1). Rows are saved
after each one through `RunFile`, so an interrupted sweep keeps every finished point.

Rows of a timed point: ms_per_batch, ms_per_image, images_per_s, each with ``value`` the
median over the timed calls, ``ci_low``/``ci_high`` its 95% interval (empty under 5 calls),
``spread`` the median absolute deviation, ``n`` the timed calls, ``stable`` whether the
interval met ``ci_target``, ``notes`` why not, and in ``config`` the run parameters with
``cv``, ``p50``, ``p90``, ``p99`` (in the row's unit) and ``stop`` (why timing stopped);
then peak_mem_mb (over the warm-up calls, `harness.timing.adaptive`), mfu where the device's
peak is known (`harness.timing.peaks`), and frac_matmul_peak, the fraction of the matmul
FLOP/s this run measured on its own device.
Per pair and batch size and part, a ``speedup`` row (model = the fast model,
``config.teacher``): the teacher's median time over the fast model's, with a bootstrap
interval over the paired rounds; and per part one at each model's best-throughput batch
size (``batch_size`` empty, ``config.at = "best throughput"``), unpaired. With several settings
of either model, every fast setting is paired with every teacher setting (``config.options``
and ``config.teacher_options``), all timed in the same rounds.
Each run also times a fixed calibration workload (``model="calibration"``,
``metric=calibration_ms``) at its start and at its end (``config.when``), so timings can be
compared across machines as ratios to it, and a machine whose speed changed during the run
shows it; the start's fastest call's FLOP/s is the run's matmul peak.

Example::

    config = SweepConfig(models=("biflow-b2", "itarflow-b2"), batch_sizes=(1, 4), decode="both")
    result = run_sweep(config, "results/local/demo.csv", "results/local/demo.pyperf.json")
"""

from __future__ import annotations

import gc
import inspect
import io
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pyperf
import torch

from adapters import get_spec, load_sampler
from harness.devices import device_name, resolve_device
from adapters.api.errors import InputError
from harness.pairs import pairs_among
from harness.quality import (DEFAULT_FID_RTOL, DEFAULT_SAMPLES, DEFAULT_TOL, GateConfig, QualityGate, Verdict, is_exact,
                             reference_options)
from harness.results import (CALIBRATION_MS, ERROR, FRAC_MATMUL_PEAK, IMAGES_PER_S, IMAGES_PER_S_PER_CHIP, MFU,
                             MS_PER_BATCH, MS_PER_IMAGE, OOM, PEAK_MEM_MB, REFERENCE, SPEEDUP, UNVERIFIED, RunFile,
                             atomic_write)
from adapters.api.sampler import ModelInfo, Sampler, weights_with_decoder
from adapters.api.seeding import sample_labels, sample_noise
from harness.settings import json_options, label, nfe_of, options_text, setting_options
from harness.timing.adaptive import Budget, Series, time_rounds
from harness.timing.clocks import Clock, Timing, clock_for, measure
from harness.timing.memory import PeakMemory
from harness.timing.peaks import flops_per_image, mfu, peak_flops
from harness.timing.stats import DEFAULT_CI_TARGET, ratio_interval, summarise, warning_text

# The B/2-sized models of the main job: BiFlow and its teacher, SiT (the released Rectified Flow
# checkpoints, one Euler step), MeanFlow, and the released one-step models iMF-B/2 and pMF-B/16
# (pixel space, so its decode=on row is its whole cost).
B2_MODELS = ("biflow-b2", "itarflow-b2", "sit-b2", "meanflow-b2", "imf-b2", "pmf-b16")
# The CI gate's timings: the pair whose ratio is the headline, and one DiT-backbone baseline.
CI_MODELS = ("biflow-b2", "itarflow-b2", "sit-b2", "meanflow-b2")
# Accelerator presets add the XL-sized models the leaderboard ranks beside their published rows.
GPU_MODELS = B2_MODELS + ("sit-xl2", "imf-xl2", "pmf-h16")
TPU_MODELS = B2_MODELS + ("itarflow-xl2", "sit-xl2", "imf-xl2", "pmf-h16")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DECODE_CHOICES = ("on", "off", "both")
COMPILE_CHOICES = ("none", "torch", "both")
DECODER_ID = "sd-vae"  # `model` of the decoder-only rows
CALIBRATION_ID = "calibration"
GENERATOR, END_TO_END, DECODER = "off", "on", "only"  # a point's part, as its `decode` column
BEST = "best throughput"  # `config.at` of the speed-up rows at each model's best batch size
# The calibration workload is timed the same way in every run, whatever --repeats says, at the
# start and again at the end of the sweep: a machine whose speed changed in between shows it.
CALIBRATION_REPEATS, CALIBRATION_MAX_TIME = 20, 5.0
START, END = "start", "end"  # `config.when` of the calibration rows


@dataclass(frozen=True)
class SweepConfig:
    """What one `nfebench bench` run measures; the defaults are the CLI's defaults."""

    models: tuple[str, ...] = field(default=B2_MODELS, metadata={"help": "model ids"})
    batch_sizes: tuple[int, ...] = field(default=(1,), metadata={"help": "images per generate call"})
    decode: str = field(default="off", metadata={"help": "time with the SD-VAE decode: on, off or both"})
    decode_batch_sizes: tuple[int, ...] | None = field(
        default=None, metadata={"help": "batch sizes of the decode=on and decoder-alone points (all when not given)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA if present), cpu or cuda"})
    dtype: str = field(default="float32", metadata={"help": "parameter and compute dtype"})
    compile: str = field(default="none",
                         metadata={"help": "torch.compile the generator and decoder: none, torch or both"})
    warmup: int = field(default=1, metadata={"help": "untimed calls before each point (compilation lands here)"})
    repeats: int = field(default=20, metadata={"help": "most timed calls per point"})
    max_time: float | None = field(
        default=10.0, metadata={"help": "seconds of timed calls a point may spend before it stops short of "
                                        "--ci-target (a pair of models: twice that)"})
    ci_target: float = field(
        default=DEFAULT_CI_TARGET,
        metadata={"help": "stop a point once its median's 95%% interval has a half-width of at most this fraction "
                          "of the median; above it when the budget is spent, the point is marked unstable"})
    guidance: float | None = field(default=None, metadata={"help": "guidance scale; None: each model's default"})
    seed: int = field(default=0, metadata={"help": "seed of the noise and labels (adapters.api.seeding)"})
    calibrate: bool = field(default=True, metadata={"help": "time the fixed calibration workload"})
    backend: str = field(default="torch", metadata={"help": "torch, or jax (the Flax ports, XLA-compiled)"})
    checkpoints: Mapping[str, str] = field(
        default_factory=dict, metadata={"help": "model id -> checkpoint file; the others have random weights"})
    overrides: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, metadata={"help": "model id -> config overrides (load_sampler's **config_overrides)"})
    options: Mapping[str, tuple[Mapping[str, Any], ...]] = field(
        default_factory=dict, metadata={"help": "model id -> its option settings (passed to generate), each timed "
                                                "as a point of its own; a model not named runs its defaults"})
    quality: bool = field(default=True, metadata={"help": "check each fast setting against its reference setting"})
    quality_tol: float = field(default=DEFAULT_TOL, metadata={
        "help": "mean absolute deviation from the reference's samples (model space) a setting may have without "
                "FIDs; 2/255 is one uint8 level of an image in [-1, 1]"})
    quality_fid_rtol: float = field(default=DEFAULT_FID_RTOL, metadata={
        "help": "with FIDs: a setting is verified while its FID is at most 1 + this times its reference's"})
    quality_samples: int = field(default=DEFAULT_SAMPLES, metadata={"help": "samples of the deviation check"})
    quality_ref: str | None = field(default=None, metadata={
        "help": "reference set (as nfebench eval --ref takes it): with trained weights, a FID per setting"})
    quality_n: int | None = field(default=None, metadata={"help": "samples per FID of --quality-ref"})
    compile_backend: str = "inductor"  # torch.compile backend; tests use "eager"

    def settings_of(self, model: str) -> tuple[Mapping[str, Any], ...]:
        """The option settings `model` is timed with (its defaults when none is given)."""
        return tuple(self.options.get(model) or ({},))

    def gate(self) -> GateConfig:
        return GateConfig(enabled=self.quality, tol=self.quality_tol, fid_rtol=self.quality_fid_rtol,
                          samples=self.quality_samples, reference=self.quality_ref, n=self.quality_n)


# Named sweeps (tox -e bench / bench-gpu); explicit CLI options override their fields.
PRESETS: dict[str, dict[str, Any]] = {
    # About 6 minutes on 2 quiet cores (estimated from the committed run of the same machine:
    # iTARFlow-B/2 10-14 s per call at batch 1 and 4, BiFlow-B/2 0.33 s per image, the SD-VAE
    # decode 3.6 s per image). Each point takes 1 warm-up and at least 5 timed calls, so the
    # decode (the dearest part for every latent model) is timed at batch 1 only, and the
    # BiFlow/iTARFlow pair, about 4 minutes of it, is the bulk. A further ~0.3 s-per-image
    # model adds about 35 s (decode included), so three more stay within 10 minutes. The
    # 15 s budget lets a pair's round (one call of each, up to 17.5 s with decode) be
    # repeated 5 times even when the machine is up to 1.7x slower; beyond, the rows say so.
    "cpu": dict(models=B2_MODELS, batch_sizes=(1, 4), decode="both", decode_batch_sizes=(1,), device="cpu",
                dtype="float32", compile="none", warmup=1, repeats=20, max_time=15.0),
    # The CI regression gate (.ci/regress): generators only, batch 1, about a minute.
    "ci": dict(models=CI_MODELS, batch_sizes=(1,), decode="off", device="cpu", dtype="float32",
               compile="none", warmup=1, repeats=5, max_time=3.0),
    "gpu": dict(models=GPU_MODELS, batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256), decode="both", device="cuda",
                dtype="bfloat16", compile="both", warmup=3, repeats=50, max_time=10.0),
    # tox -e bench-tpu: the JAX ports on every local TPU chip, the batch split over them.
    "tpu": dict(backend="jax", models=TPU_MODELS,
                batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256), decode="both", device="tpu", dtype="bfloat16",
                compile="none", warmup=2, repeats=50, max_time=10.0),
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
    for what, mapping in (("--checkpoint", config.checkpoints), ("--set", config.overrides),
                          ("--options", config.options)):
        stray = sorted(set(mapping) - set(config.models))
        if stray:
            raise InputError(f"{what} names {', '.join(stray)}, not among --models {','.join(config.models)}")
    config.gate().check()
    if not config.batch_sizes:
        raise InputError("no batch sizes; pass --batch-sizes, e.g. 1,4")
    if len(set(config.batch_sizes)) != len(config.batch_sizes):
        raise InputError(f"a batch size is listed twice in {config.batch_sizes}")
    bad = [b for b in config.batch_sizes if not isinstance(b, int) or b <= 0]
    if bad:
        raise InputError(f"batch sizes must be positive integers, got {bad}")
    if config.decode_batch_sizes is not None:
        outside = [b for b in config.decode_batch_sizes if b not in config.batch_sizes]
        if outside or not config.decode_batch_sizes:
            raise InputError(f"--decode-batch-sizes must be some of --batch-sizes {config.batch_sizes}, got "
                             f"{config.decode_batch_sizes}")
    for name, value, choices in (("decode", config.decode, DECODE_CHOICES), ("dtype", config.dtype, tuple(DTYPES)),
                                 ("compile", config.compile, COMPILE_CHOICES)):
        if value not in choices:
            raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    if config.warmup < 0 or config.repeats < 1:
        raise InputError(f"need --warmup >= 0 and --repeats >= 1, got {config.warmup} and {config.repeats}")
    if config.compile != "none" and config.warmup < 1:
        raise InputError("--compile torch needs --warmup >= 1, so that compilation is not timed")
    if config.max_time is not None and not config.max_time > 0:
        raise InputError(f"--max-time must be a positive number of seconds, got {config.max_time}")
    if not 0 < config.ci_target < 1:
        raise InputError(f"--ci-target must lie strictly between 0 and 1 (a fraction of the median, e.g. 0.05), "
                         f"got {config.ci_target}")
    if config.backend not in BACKENDS:
        raise InputError(f"unknown backend {config.backend!r}; choose one of {', '.join(BACKENDS)}")
    if config.backend == "jax":
        from adapters.api.devices import jax_devices

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
    variant: int = 0  # which of the model's option settings (`SweepConfig.settings_of`)


@dataclass(frozen=True)
class Setting:
    """One option setting of a model, checked before anything is timed (`inspect_models`)."""

    model: str
    options: Mapping[str, Any]
    label: str  # `harness.settings.label`: the model id, with its options if any
    nfe: int  # of what runs: the sweep's guidance and these options (`harness.settings.nfe_of`)
    reference_options: Mapping[str, Any]  # its reference setting's (`harness.quality.reference_options`)
    exact: bool  # decodes as its reference does (`harness.quality.is_exact`): TARFlow's sequential decoding


def family_options(sampler: Sampler) -> tuple[str, ...]:
    """The options `sampler.generate` accepts: its ``family_options`` (TorchSampler, JaxSampler),
    else the keyword arguments of ``generate`` besides guidance."""
    found = getattr(sampler, "family_options", None)
    if found is not None:
        return tuple(found)
    params = inspect.signature(sampler.generate).parameters.values()
    return tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name != "guidance")


def inspect_models(config: SweepConfig) -> tuple[dict[str, ModelInfo], dict[tuple[str, int], Setting]]:
    """Every model built on the meta device with its checkpoint and overrides, and its settings checked.

    A checkpoint that does not fit the model (as `--set` configures it) fails here, naming its
    tensors; so do options the family lacks (named with the ones it has) and bad option values
    the family can check without sampling (a sampler's ``check_options``, e.g. TARFlow's
    ``jacobi_tol`` < 0): all before a run file exists. A setting whose options are all at their
    defaults is the default setting (`harness.settings.setting_options`).

    Returns:
        (model id -> its ModelInfo, weights included; (model id, variant) -> `Setting`).
    """
    infos: dict[str, ModelInfo] = {}
    settings: dict[tuple[str, int], Setting] = {}
    for model in config.models:
        overrides = dict(config.overrides.get(model, {}))
        sampler = load_sampler(model, checkpoint=config.checkpoints.get(model), device="meta", **overrides)
        infos[model] = sampler.info
        valid = family_options(sampler)
        seen: dict[str, int] = {}
        for variant, given in enumerate(config.settings_of(model)):
            options = setting_options(sampler, given)
            if label(model, options) in seen:
                raise InputError(f"--options: {options_text(given) or 'the defaults'} of {model} is the same setting "
                                 f"as another one given ({label(model, options)}: options at their defaults are "
                                 f"dropped)")
            seen[label(model, options)] = variant
            unknown = sorted(set(options) - set(valid))
            if unknown:
                hint = (f"; to give options to one model only, write --options {model}:key=value,..."
                        if len(config.models) > 1 else "")
                raise InputError(f"{model} (family {sampler.info.family}) has no option(s) {', '.join(unknown)}; "
                                 f"it accepts: {', '.join(valid) or 'none'}{hint}")
            check = getattr(sampler, "check_options", None)
            if check is not None:
                check(**options)
            settings[(model, variant)] = Setting(
                model, dict(options), label(model, options),
                nfe_of(model, guidance=config.guidance, options=options, **overrides),
                reference_options(sampler, options), is_exact(sampler, options))
        del sampler
    return infos, settings


def groups(models: tuple[str, ...]) -> list[tuple[str, ...]]:
    """`models` in build groups: the models of each pair (`harness.pairs`) together (linked
    pairs chain into one group), every other model alone; in the order of first appearance."""
    group_of = {m: (m,) for m in models}
    for fast, teacher in pairs_among(models):
        merged = tuple(m for m in models if m in group_of[fast] + group_of[teacher])
        for m in merged:
            group_of[m] = merged
    return list(dict.fromkeys(group_of[m] for m in models))


def plan(config: SweepConfig, infos: dict[str, ModelInfo]) -> list[Point]:
    """The sweep's points in run order: per compile mode, per build group (`groups`), per batch
    size: the group's generators, then end to end, then the decoder alone if no earlier model
    timed it. Consecutive points of one group, batch size and part are timed together."""
    modes = {"none": (False,), "torch": (True,), "both": (False, True)}[config.compile]
    parts = {"off": (GENERATOR,), "on": (END_TO_END,), "both": (GENERATOR, END_TO_END)}[config.decode]
    decoding_at = set(config.decode_batch_sizes or config.batch_sizes)
    points, decoder_done = [], set()
    for compiled in modes:
        for group in groups(config.models):
            for bs in config.batch_sizes:
                for part in parts:
                    if part == END_TO_END and bs not in decoding_at:
                        continue
                    points += [Point(m, compiled, bs, part, v) for m in group
                               for v in range(len(config.settings_of(m)))]
                for m in group:
                    info = infos[m]
                    key = (compiled, bs, info.sample_shape, info.image_size)
                    if (END_TO_END in parts and bs in decoding_at and info.space == "latent"
                            and key not in decoder_done):
                        decoder_done.add(key)
                        points.append(Point(m, compiled, bs, DECODER))
    return points


def compile_sampler(sampler: Sampler, *, decoder: bool, backend: str) -> str:
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


def calibration_workload(device: torch.device, dtype: torch.dtype = torch.float32
                         ) -> tuple[Callable[[], Any], str, float]:
    """A fixed matmul loop of a few hundred ms on its device type: the workload, its
    description and its FLOPs (2 n^3 per matmul). float32 is the calibration; the run's own
    dtype gives the matmul peak its rows are a fraction of."""
    n, reps = (512, 40) if device.type == "cpu" else (8192, 100)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)

    def work() -> torch.Tensor:
        c = a
        for _ in range(reps):
            c = torch.mm(b, c) * (1.0 / n**0.5)  # rescaled so values stay finite
        return c

    name = str(dtype).removeprefix("torch.")
    return work, f"{name} matmul {n}x{n} x{reps}", 2.0 * n**3 * reps


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    suite: pyperf.BenchmarkSuite | None
    errors: list[str]


@dataclass
class Built:
    """A model ready to time: its sampler, its decoder's weights (None when no decode is
    timed) and what was compiled (for the rows' config)."""

    sampler: Any
    dec_weights: str | None
    compiled_what: str | None
    own_bytes: int | None = None  # CUDA: device memory its build allocated (weights, decoder)


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


# What of a sampler's `last_stats` the timing rows keep in `config` (TARFlow's decoding passes).
STATS_KEPT = ("iterations_mean", "iterations_max", "iterations_per_block")


class _Runner:
    """Runs the planned points, one build group at a time, saving rows as it goes (PyTorch;
    `harness.timing.jax_runner` overrides the backend-specific steps for JAX: `_build`,
    `_prepare`, `_matmul_peak`, `calibrate`, `_memory`, `_free`, `_is_oom`, `_reference_sampler`)."""

    backend = "torch"

    @property
    def timer_name(self) -> str:
        return "CUDA events" if self.platform == "cuda" else "time.perf_counter"

    def __init__(self, config: SweepConfig, run: RunFile, progress: bool,
                 settings: dict[tuple[str, int], Setting]):
        self.config = config
        self.run = run
        self.device = resolve_device(config.device)
        self.platform = self.device.type
        self.dtype = DTYPES[config.dtype]
        self.clock: Clock = clock_for(self.device)
        self.device_name = device_name(self.device)
        tf32 = self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
        self.peak = peak_flops(self.device_name, config.dtype, tf32=tf32)
        self._init_common(progress, settings, str(self.device))

    def _init_common(self, progress: bool, settings: dict[tuple[str, int], Setting], feature_device: str) -> None:
        self.benchmarks: list[pyperf.Benchmark] = []
        self.errors: list[str] = []
        self.progress = progress
        self.matmul_peak: dict[str, Any] | None = None  # FLOP/s, dtype, workload, stable, note (_set_matmul_peak)
        self.budget = Budget(repeats=self.config.repeats, max_time=self.config.max_time,
                             ci_target=self.config.ci_target)
        self.settings = settings
        self.verdicts: dict[tuple[str, int, bool], Verdict] = {}  # (model, variant, compiled) -> the gate's
        self.built: dict[str, Built] = {}  # the build group being timed
        self.gate = QualityGate(self.config.gate(), self.run, seed=self.config.seed, guidance=self.config.guidance,
                                feature_device=feature_device, build_reference=self._reference_sampler)

    # --- rows -------------------------------------------------------------------------

    def _settings(self, info: ModelInfo | None, point: Point, weights: str, **over: Any) -> dict[str, Any]:
        s = dict(backend=self.backend, device=self.platform, device_name=self.device_name, dtype=self.config.dtype,
                 compiled=point.compiled, batch_size=point.batch_size, decode=point.part,
                 guidance=self.config.guidance, seed=self.config.seed, weights=weights, model=point.model)
        if info is not None:
            s.update(family=info.family, params=info.params, nfe=self.settings[(point.model, point.variant)].nfe)
        s.update(over)
        return s

    def _run_config(self) -> dict[str, Any]:
        c = self.config
        return {"warmup": c.warmup, "repeats": c.repeats, "max_time": c.max_time, "ci_target": c.ci_target}

    def _stat_row(self, settings: dict[str, Any], metric: str, values: list[float], config: dict[str, Any],
                  stable: bool, notes: str) -> None:
        s = summarise(values)
        self.run.add(**settings, metric=metric, value=s.median, spread=s.mad, n=s.n, ci_low=s.ci_low,
                     ci_high=s.ci_high, stable=stable, notes=notes or None, config={**config, **s.percentiles()})

    def _timing_rows(self, prep: Prepared, series: Series) -> None:
        """The point's rows from its timed calls (seconds each)."""
        bs, chips, seconds = prep.point.batch_size, prep.chips, series.values
        stable = series.stable(self.config.ci_target)
        config = {**prep.config, "stop": series.stop, **{k: prep.stats[k] for k in STATS_KEPT if k in prep.stats}}
        notes = "; ".join(n for n in (series.note, prep.notes) if n)
        per_call = {MS_PER_BATCH: [v * 1e3 for v in seconds],
                    MS_PER_IMAGE: [v * 1e3 / bs for v in seconds],
                    IMAGES_PER_S: [bs / v for v in seconds]}
        if self.backend == "jax":
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

    def _speedup_row(self, fast: Prepared, teacher: Prepared, fast_ms: list[float], teacher_ms: list[float], *,
                     paired: bool, stop: str, note: str, **over: Any) -> None:
        """A `speedup` row: the teacher's median ms per image over the fast model's, with its bootstrap interval."""
        ratio, low, high = ratio_interval(teacher_ms, fast_ms, paired=paired)
        hw = None if low is None else (high - low) / 2 / ratio
        settings = {**fast.settings, **over}
        config = {**self._run_config(), "teacher": teacher.point.model, "teacher_weights": teacher.settings["weights"],
                  "options": fast.config["options"], "teacher_options": teacher.config["options"],
                  "teacher_quality": teacher.settings["quality"],
                  # the teacher at its family's exact decoding (TARFlow: sequential), the speed-up papers quote
                  "teacher_exact": self.settings[(teacher.point.model, teacher.point.variant)].exact,
                  "pairing": "paired rounds" if paired else "unpaired", "stop": stop,
                  "fast_ms_per_image": summarise(fast_ms).median, "teacher_ms_per_image": summarise(teacher_ms).median}
        if not paired:
            config.update(at=BEST, batch_size=fast.point.batch_size, teacher_batch_size=teacher.point.batch_size)
        self.run.add(**settings, metric=SPEEDUP, value=ratio, n=min(len(fast_ms), len(teacher_ms)), ci_low=low,
                     ci_high=high, stable=hw is not None and hw <= self.config.ci_target, notes=note or None,
                     config=config)

    def _pyperf(self, name: str, timing: Timing | Series, metadata: dict[str, Any]) -> None:
        meta = {"name": name, "unit": "second", "loops": 1,
                "timer": self.timer_name,
                "nfebench_run_id": self.run.provenance["run_id"], "git_sha": self.run.provenance["git_sha"]}
        meta.update({k: v for k, v in metadata.items() if isinstance(v, (int, float, str)) and v != ""})
        run = pyperf.Run(list(timing.values), warmups=[(1, w) for w in timing.warmups], metadata=meta)
        self.benchmarks.append(pyperf.Benchmark([run]))

    # --- backend steps (PyTorch) ------------------------------------------------------

    def _memory(self, built: dict[str, Built]) -> Callable[[str], PeakMemory] | None:
        """Peak memory regions per member (member -> its model's build); with other models built
        beside it (a pair), a CUDA figure counts only the member's own tensors and what its call allocates."""
        shared = len({id(b) for b in built.values()}) > 1
        return lambda member: PeakMemory(self.device, own_bytes=built[member].own_bytes if shared else None)

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _matmul_peak(self, calibration: Timing, description: str, flops: float) -> None:
        """Set the run's matmul peak in its own dtype: the calibration's for float32, else the same
        workload timed again in the run's dtype."""
        if self.dtype != torch.float32:
            work, description, flops = calibration_workload(self.device, self.dtype)
            calibration = measure(work, self.clock, warmup=1, repeats=CALIBRATION_REPEATS,
                                  max_time=CALIBRATION_MAX_TIME, ci_target=self.config.ci_target)
        self._set_matmul_peak(calibration, description, flops)

    def _set_matmul_peak(self, timing: Timing, description: str, flops: float) -> None:
        """The peak is the fastest call's FLOP/s (a peak is what the machine reaches; other work on
        a shared machine only slows calls down); a calibration that missed its interval target
        leaves every fraction of it marked unstable."""
        s = summarise(timing.values)
        self.matmul_peak = {"flops": flops / min(timing.values), "dtype": self.config.dtype, "workload": description,
                            "stable": s.stable(self.config.ci_target),
                            "note": "" if s.stable(self.config.ci_target) else
                            f"the matmul peak itself is unsure ({warning_text(s)} in its calibration)"}

    def calibrate(self, when: str = START) -> None:
        """Time the calibration workload (`when`: at the START or the END of the sweep); the
        start's also sets the matmul peak the rows are a fraction of."""
        work, description, flops = calibration_workload(self.device)
        timing = measure(work, self.clock, warmup=1, repeats=CALIBRATION_REPEATS, max_time=CALIBRATION_MAX_TIME,
                         ci_target=self.config.ci_target)
        self._calibration_rows(timing, description, flops, compiled=False, when=when)
        if when == START:
            self._matmul_peak(timing, description, flops)

    def _calibration_rows(self, timing: Timing, description: str, flops: float, *, compiled: bool, when: str) -> None:
        s = summarise([v * 1e3 for v in timing.values])
        config = {"workload": description, "flops": flops, "peak_flop_per_s": flops / min(timing.values),
                  "threads": torch.get_num_threads(), "stop": timing.stop, "when": when, **s.percentiles()}
        self.run.add(model=CALIBRATION_ID, backend=self.backend, device=self.platform, device_name=self.device_name,
                     dtype="float32", compiled=compiled, seed=0, metric=CALIBRATION_MS, value=s.median, spread=s.mad,
                     n=s.n, ci_low=s.ci_low, ci_high=s.ci_high, stable=s.stable(self.config.ci_target),
                     notes=timing.note or None, config=config)
        self._pyperf(f"{CALIBRATION_ID}/{when}", timing, {"workload": description})

    def _load(self, model: str, dtype: torch.dtype) -> Sampler:
        c = self.config
        return load_sampler(model, checkpoint=c.checkpoints.get(model), device=self.device, dtype=dtype,
                            **dict(c.overrides.get(model, {})))

    def _build(self, model: str, compiled: bool, decoding: bool) -> Built:
        cuda = self.device.type == "cuda"
        before = torch.cuda.memory_allocated(self.device) if cuda else None
        sampler = self._load(model, self.dtype)
        dec_weights = getattr(sampler, "decoder_weights", None) if decoding else None  # builds the VAE now
        c = self.config
        what = compile_sampler(sampler, decoder=decoding, backend=c.compile_backend) if compiled else None
        own = torch.cuda.memory_allocated(self.device) - before if cuda else None
        return Built(sampler, dec_weights, what, own)

    def _reference_sampler(self, model: str) -> Sampler:
        """`model` in float32, eager, with the same weights: the quality gate's reference (the
        group's own build when it is that already)."""
        built = self.built.get(model)
        if built is not None and self.dtype == torch.float32 and built.compiled_what is None:
            return built.sampler
        return self._load(model, torch.float32)

    def _eager(self, compiled: bool) -> bool:
        """Whether a setting timed with `compiled` runs as its reference does (JAX: always, see `harness.quality`)."""
        return not compiled

    def _point_config(self, point: Point, compiled_what: str | None) -> dict[str, Any]:
        setting = self.settings[(point.model, point.variant)]
        config = {**self._run_config(), "threads": torch.get_num_threads(), "timer": type(self.clock).__name__,
                  "options": json_options(setting.options)}
        verdict = self.verdicts.get((point.model, point.variant, point.compiled))
        if verdict is not None and point.part != DECODER:
            config["quality_check"] = verdict.reason
        if point.part == DECODER:
            config["decoder_of"] = point.model
        if compiled_what:
            config["compiled"] = compiled_what
        return config

    def _point_settings(self, built: Built, info: ModelInfo, point: Point, decoder_params: int | None
                        ) -> dict[str, Any]:
        if point.part == DECODER:
            return self._settings(None, point, str(built.dec_weights), model=DECODER_ID, family=DECODER_ID,
                                  params=decoder_params, nfe=1)
        latent = info.space == "latent"
        weights = weights_with_decoder(info.weights, built.dec_weights if point.part == END_TO_END and latent else None)
        verdict = self.verdicts.get((point.model, point.variant, point.compiled))
        return self._settings(info, point, weights, quality=None if verdict is None else verdict.quality)

    def _workload(self, sampler: Sampler, point: Point, noise, labels, stats: dict[str, Any]) -> Callable[[], Any]:
        """The point's timed call; the generator's statistics of each call land in `stats`."""
        c, options = self.config, dict(self.settings[(point.model, point.variant)].options)

        def generate():
            out = sampler.generate(noise, labels, guidance=c.guidance, **options)
            stats.clear()
            stats.update(getattr(sampler, "last_stats", None) or {})
            return out

        if point.part == GENERATOR:
            return generate
        if point.part == END_TO_END:
            return lambda: sampler.decode(generate())
        latents = generate()
        return lambda: sampler.decode(latents)

    def _prepare(self, built: Built, info: ModelInfo, point: Point) -> Prepared:
        c, bs, sampler = self.config, point.batch_size, built.sampler
        settings = self._point_settings(built, info, point, getattr(getattr(sampler, "decoder", None), "params", None))
        config = self._point_config(point, built.compiled_what)
        noise = sample_noise(c.seed, range(bs), info.sample_shape).to(self.device, self.dtype)
        labels = sample_labels(c.seed, range(bs), info.num_classes)
        labels = None if labels is None else labels.to(self.device)
        stats: dict[str, Any] = {}
        fn = self._workload(sampler, point, noise, labels, stats)
        return self._prepared(point, info, fn, settings, config, stats=stats)

    def _prepared(self, point: Point, info: ModelInfo, fn: Callable[[], Any], settings: dict[str, Any],
                  config: dict[str, Any], **extra: Any) -> Prepared:
        verdict = self.verdicts.get((point.model, point.variant, point.compiled))
        notes = verdict.notes if verdict is not None and point.part != DECODER else ""
        member = DECODER_ID if point.part == DECODER else self.settings[(point.model, point.variant)].label
        return Prepared(point, info, fn, settings, config, _flops(info, point), label=member, notes=notes, **extra)

    @staticmethod
    def _is_oom(exc: Exception) -> bool:
        return isinstance(exc, torch.cuda.OutOfMemoryError)  # is torch.OutOfMemoryError: CUDA and CPU

    # --- the driver -------------------------------------------------------------------

    def run_points(self, points: list[Point], infos: dict[str, ModelInfo]) -> None:
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
            reference = {**self._settings(info, ref_point, info.weights), "dtype": "float32",
                         "nfe": nfe_of(model, guidance=self.config.guidance, options=setting.reference_options,
                                       **dict(self.config.overrides.get(model, {})))}
            try:
                verdict = self.gate.check(model, self.built[model].sampler, setting.options,
                                          reference_options=setting.reference_options, exact=setting.exact,
                                          dtype=self.config.dtype, eager=self._eager(compiled),
                                          settings=self._settings(info, point, info.weights),
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
        return [(f, t) for fast, teacher in pairs_among(of) for f in of[fast] for t in of[teacher]]

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
                self._failed(infos[p.model], p, exc, settings=self._point_settings(
                    built[p.model], infos[p.model], p, None), config=self._point_config(p, built[p.model].compiled_what))
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
                self._timing_rows(prep, series)
                self._pyperf(_benchmark_name(prep.settings, prep.label), series, prep.settings)
                out[prep.point] = (prep, series)
        timed = {prep.label for prep, _ in out.values()}
        for (fast, teacher), ps in rounds.pairs.items():
            if fast in timed and teacher in timed:
                bs = point0.batch_size
                self._speedup_row(prepared[fast], prepared[teacher], [v * 1e3 / bs for v in ps.fast],
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
                self._speedup_row(f_prep, t_prep, f_ms, t_ms, paired=False, stop="", note=note, batch_size=None)

    def _failed(self, info: ModelInfo, point: Point, exc: Exception, *, settings: dict[str, Any] | None = None,
                config: dict[str, Any] | None = None) -> None:
        """One row for a point that did not finish: ``oom`` if it ran out of memory (the sweep
        expects that at large batch sizes), else ``error``, which the command reports."""
        settings = settings or self._settings(info, point, info.weights)
        if self._is_oom(exc):
            self.run.add(**settings, metric=MS_PER_BATCH, status=OOM, notes=_first_line(exc), config=config)
            return
        note = f"{type(exc).__name__}: {_first_line(exc)}"
        where = self.settings[(point.model, point.variant)].label if (point.model, point.variant) in self.settings \
            else point.model
        self.errors.append(f"{where} bs={point.batch_size} decode={point.part}: {note}")
        self.run.add(**settings, metric=MS_PER_BATCH, status=ERROR, notes=note, config=config)


def _median_per_image(prep: Prepared, series: Series) -> float:
    return summarise(series.values).median / prep.point.batch_size


def _flops(info: ModelInfo, point: Point) -> float:
    """FLOPs of one call of the point: the generator's, the decoder's, or both, times the batch."""
    return point.batch_size * flops_per_image(info, generator=point.part != DECODER, decode=point.part != GENERATOR)


def _benchmark_name(s: dict[str, Any], member: str) -> str:
    """pyperf benchmark name: the settings that tell points apart within a run, and match the
    same point across runs (so `python -m pyperf compare_to old.json new.json` pairs them);
    `member` is the setting's label (the model id, with its options if any)."""
    return (f"{member}/bs{s['batch_size']}/decode-{s['decode']}/{s['dtype']}/"
            f"{'compiled' if s['compiled'] else 'eager'}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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

        >>> cfg = with_preset("cpu", models=("sit-b2",), batch_sizes=(1,), decode="off")
        >>> res = run_sweep(cfg, "results/local/rf.csv", "results/local/rf.pyperf.json")
        >>> {r["metric"] for r in res.rows} >= {"ms_per_image", "images_per_s"}
        True
    """
    validate(config)
    out = Path(out)
    if out.suffix != ".csv":
        raise InputError(f"the run file must be a .csv file, got {out}")
    if out.exists():
        raise InputError(f"run file {out} already exists; choose a new --out path (runs are never overwritten)")
    for path, option in ((out, "--out"), (pyperf_json, "--pyperf-json")):
        if path is not None and not Path(path).parent.is_dir():
            raise InputError(f"{option} {path}: the folder {Path(path).parent} does not exist; create it or choose "
                             "another path")
    if pyperf_json is not None and Path(pyperf_json).exists():
        raise InputError(f"pyperf file {pyperf_json} already exists; choose a new --pyperf-json path")
    infos, settings = inspect_models(config)  # before the run file: a bad checkpoint or option writes nothing
    run = RunFile(out, provenance)
    if config.backend == "jax":
        from harness.timing.jax_runner import JaxRunner as runner_class
    else:
        runner_class = _Runner
    runner = runner_class(config, run, progress, settings)
    points = plan(config, infos)
    try:
        if config.calibrate:
            runner.calibrate(START)
        runner.run_points(points, infos)
        if config.calibrate:
            runner.calibrate(END)
    finally:
        suite = pyperf.BenchmarkSuite(runner.benchmarks) if runner.benchmarks else None
        if suite is not None and pyperf_json is not None:
            buf = io.StringIO()
            suite.dump(buf, compact=False)
            atomic_write(pyperf_json, buf.getvalue())
    return SweepResult(run.rows, suite, runner.errors)

