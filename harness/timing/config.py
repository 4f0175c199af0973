"""What one `nfebench bench` run measures: `SweepConfig` (the CLI's defaults), the named
presets, the choices of its fields, and `validate`, which refuses a bad setting before
anything is built or timed.

Example::

    config = with_preset("cpu", models=("sit-b2",), batch_sizes=(1,), decode="off")
    validate(config)  # an unknown id, CUDA asked for and absent, ...: InputError (exit 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from adapters import get_spec
from adapters.api.errors import InputError
from harness.devices import resolve_device
from harness.quality import DEFAULT_FID_RTOL, DEFAULT_SAMPLES, DEFAULT_TOL, GateConfig
from harness.timing.stats import DEFAULT_CI_TARGET

# The B/2-sized models of the main job: BiFlow and its teacher, SiT (the released Rectified Flow
# checkpoints, one Euler step), MeanFlow, and the released one-step models iMF-B/2 and pMF-B/16
# (pixel space, so its decode=on row is its whole cost).
B2_MODELS = ("biflow-b2", "itarflow-b2", "sit-b2", "meanflow-b2", "imf-b2", "pmf-b16", "dmf-b2", "soflow-b2")
# The CI gate's timings: the pair whose ratio is the headline, and one DiT-backbone baseline.
CI_MODELS = ("biflow-b2", "itarflow-b2", "sit-b2", "meanflow-b2")
# Accelerator presets add the XL-sized models the leaderboard ranks beside their published rows.
GPU_MODELS = B2_MODELS + ("sit-xl2", "imf-xl2", "pmf-h16", "dmf-xl2", "soflow-xl2", "meanflow-xl2", "facm-xl1")
# TPUs run the JAX ports only (`ModelSpec.jax_port`): DMF, SoFlow and FACM have none yet.
TPU_MODELS = ("biflow-b2", "itarflow-b2", "sit-b2", "meanflow-b2", "imf-b2", "pmf-b16",
              "itarflow-xl2", "sit-xl2", "imf-xl2", "pmf-h16", "meanflow-xl2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DECODE_CHOICES = ("on", "off", "both")
COMPILE_CHOICES = ("none", "torch", "both")
BACKENDS = ("torch", "jax")


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
    baselines: Mapping[str, int] = field(
        default_factory=dict, metadata={"help": "model id -> the variant (index into its option settings) that "
                                                "its other settings are timed against in alternating rounds, each "
                                                "with a speedup row over it (`nfebench sweep`); bench has none"})
    setting_guidance: bool = field(
        default=False, metadata={"help": "an option setting may set `guidance` of its own (`nfebench sweep`'s "
                                         "grids); otherwise `guidance` is the run's one scale"})
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
    # About 10.5 minutes on 2 cores (measured: 10:31 for the eight models in a fresh clone; the
    # parts estimated from the committed run of the same machine:
    # iTARFlow-B/2 10-14 s per call at batch 1 and 4, BiFlow-B/2 0.33 s per image, the SD-VAE
    # decode 3.6 s per image). Each point takes 1 warm-up and at least 5 timed calls, so the
    # decode (the dearest part for every latent model) is timed at batch 1 only, and the
    # BiFlow/iTARFlow pair, about 4 minutes of it, is the bulk. A further ~0.3 s-per-image
    # model adds about 35 s (decode included); DMF-B/2 and SoFlow-B/2 brought it past 10 minutes. The
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


def validate(config: SweepConfig) -> None:
    """Raise InputError naming the first bad setting (before anything is built or timed)."""
    if not config.models:
        raise InputError("no models to benchmark; pass --models with comma-separated ids")
    for m in config.models:
        get_spec(m)  # unknown ids fail with the known ids and the nearest match
    if len(set(config.models)) != len(config.models):
        raise InputError(f"a model is listed twice in {','.join(config.models)}")
    for what, mapping in (("--checkpoint", config.checkpoints), ("--set", config.overrides),
                          ("--options", config.options), ("--baseline", config.baselines)):
        stray = sorted(set(mapping) - set(config.models))
        if stray:
            raise InputError(f"{what} names {', '.join(stray)}, not among --models {','.join(config.models)}")
    _validate_baselines(config)
    config.gate().check()
    _validate_grid(config)
    _validate_timing(config)
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


def _validate_baselines(config: SweepConfig) -> None:
    """Each baseline is one of its model's settings; settings with a guidance of their own are
    timed by the torch runner without the quality gate (the sweep measures their quality)."""
    for model, variant in config.baselines.items():
        if not 0 <= variant < len(config.settings_of(model)):
            raise InputError(f"the baseline of {model} is setting {variant}, but it has "
                             f"{len(config.settings_of(model))} setting(s)")
    if config.setting_guidance and (config.backend != "torch" or config.quality):
        raise InputError("settings with a guidance of their own are timed on the torch backend without the "
                         "quality gate (backend torch, quality off)")


def _validate_grid(config: SweepConfig) -> None:
    """The batch sizes and the choices of decode, dtype and compile."""
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


def _validate_timing(config: SweepConfig) -> None:
    """Warm-up, repeats, the time budget and the interval target."""
    if config.warmup < 0 or config.repeats < 1:
        raise InputError(f"need --warmup >= 0 and --repeats >= 1, got {config.warmup} and {config.repeats}")
    if config.compile != "none" and config.warmup < 1:
        raise InputError("--compile torch needs --warmup >= 1, so that compilation is not timed")
    if config.max_time is not None and not config.max_time > 0:
        raise InputError(f"--max-time must be a positive number of seconds, got {config.max_time}")
    if not 0 < config.ci_target < 1:
        raise InputError(f"--ci-target must lie strictly between 0 and 1 (a fraction of the median, e.g. 0.05), "
                         f"got {config.ci_target}")


def with_preset(preset: str | None, **overrides: Any) -> SweepConfig:
    """A `SweepConfig` from a preset's fields and then `overrides` (None values ignored).

    Example::

        >>> with_preset("ci", repeats=None).repeats  # None: the preset's value
        5
    """
    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = dict(PRESETS.get(preset, {}))
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return SweepConfig(**fields)
