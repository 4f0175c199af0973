"""The sweep's JAX runner: the same points and rows as the PyTorch one, timed the JAX way.

- Each point is compiled ahead of time (``jit(...).lower(...).compile()``) before any
  call, and the compilation gets a row of its own (``metric=compile_ms``); warm-up and
  timed calls run the compiled executable, so no timed call compiles.
- Every call is timed to ``jax.block_until_ready`` of its output (JAX returns before the
  work is done).
- The batch is split over the local devices of the platform (`jax.sharding`, parameters
  replicated); rows give images/s in total and per chip (``images_per_s_per_chip``,
  ``config.chips``), and MFU against the peak of the chips used.
- Memory is XLA's own account of one call (arguments + outputs + temporaries, per
  device, from ``compiled.memory_analysis()``), which needs no allocator hooks and is the
  same on CPU, GPU and TPU.
- The rows say ``backend=jax``, ``device`` = the JAX platform (cpu, gpu, tpu) and
  ``device_name`` = the device kind JAX reports ("TPU v4"); ``compiled`` is True.
- Checkpoints, overrides and option settings as for torch: each setting is compiled with its
  options; a port that reports its decoding passes (TARFlow's) gets them from one untimed
  ``generate`` of the point's own batch, since the compiled call returns the samples alone.
- The quality gate's reference is the JAX port in float32 (`harness.quality`), its FIDs'
  features are computed by torch on the CPU.
- Everything else is the torch runner's: adaptive repeats with the median's interval, pairs
  in alternating rounds with ``speedup`` rows, and ``frac_matmul_peak`` against the matmul
  FLOP/s of one chip measured in jax.numpy (the calibration's, in the run's dtype).
"""

from __future__ import annotations

from dataclasses import replace
from importlib import import_module
from typing import Any

import numpy as np

from adapters.api.devices import jax_device_name, jax_devices, require_jax
from harness.results import COMPILE_MS, RunFile
from adapters.api.sampler import ModelInfo
from adapters.api.seeding import sample_labels, sample_noise
from harness.timing.clocks import WallClock, measure
from harness.timing.peaks import peak_flops
from harness.timing.sweep import (CALIBRATION_MAX_TIME, CALIBRATION_REPEATS, DECODER, START, Built, Point, Setting,
                                  SweepConfig, _Runner)


class JaxRunner(_Runner):
    backend = "jax"
    timer_name = "time.perf_counter+block_until_ready"

    def __init__(self, config: SweepConfig, run: RunFile, progress: bool, settings: dict[tuple[str, int], Setting]):
        # Not the torch runner's __init__: there is no torch device to resolve here.
        jax = require_jax()
        self.config = config
        self.run = run
        self.devices = jax_devices(config.device)
        self.platform = self.devices[0].platform
        self.device_name = jax_device_name(self.devices[0])
        self.clock = WallClock(sync=jax.block_until_ready)
        self.peak = peak_flops(self.device_name, config.dtype)  # per chip
        self._init_common(progress, settings, "cpu")

    def _settings(self, info: ModelInfo | None, point: Point, weights: str, **over: Any) -> dict[str, Any]:
        return super()._settings(info, replace(point, compiled=True), weights, **over)  # XLA always compiles

    def _memory(self, built):
        return None  # XLA's memory analysis of the compiled call (Prepared.peak_mb), no allocator hooks

    def _free(self) -> None:
        import gc

        gc.collect()

    def _matmul_workload(self, dtype: str):
        """The torch runner's calibration workload (a matmul loop) in jax.numpy, compiled: the
        call, its description and its FLOPs."""
        import jax
        import jax.numpy as jnp

        n, reps = (512, 40) if self.platform == "cpu" else (8192, 100)
        rng = np.random.default_rng(0)
        a, b = (jax.device_put(jnp.asarray(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype),
                               self.devices[0]) for _ in range(2))

        @jax.jit
        def work(a, b):
            return jax.lax.fori_loop(0, reps, lambda _, c: jnp.matmul(b, c) * (1.0 / n**0.5), a)

        compiled = work.lower(a, b).compile()
        return (lambda: compiled(a, b)), f"{dtype} matmul {n}x{n} x{reps} (jax)", 2.0 * n**3 * reps

    def calibrate(self, when: str = START) -> None:
        """The torch runner's calibration in jax.numpy (float32); at the start, then the matmul peak in the run's dtype."""
        work, description, flops = self._matmul_workload("float32")
        timing = measure(work, self.clock, warmup=1, repeats=CALIBRATION_REPEATS, max_time=CALIBRATION_MAX_TIME,
                         ci_target=self.config.ci_target)
        self._calibration_rows(timing, description, flops, compiled=True, when=when)
        if when != START:
            return
        if self.config.dtype != "float32":
            work, description, flops = self._matmul_workload(self.config.dtype)
            timing = measure(work, self.clock, warmup=1, repeats=CALIBRATION_REPEATS,
                             max_time=CALIBRATION_MAX_TIME, ci_target=self.config.ci_target)
        self._set_matmul_peak(timing, description, flops)

    def _load(self, model: str, dtype: str):
        from adapters import load_sampler

        c = self.config
        return load_sampler(model, checkpoint=c.checkpoints.get(model), backend="jax", device=c.device, dtype=dtype,
                            **dict(c.overrides.get(model, {})))

    def _build(self, model: str, compiled: bool, decoding: bool) -> Built:
        sampler = self._load(model, self.config.dtype)
        return Built(sampler, sampler.decoder_weights if decoding else None, "xla")

    def _reference_sampler(self, model: str):
        """The JAX port in float32 (the group's own build when the run is float32)."""
        built = self.built.get(model)
        return built.sampler if built is not None and self.config.dtype == "float32" else self._load(model, "float32")

    def _eager(self, compiled: bool) -> bool:
        return True  # XLA compiles every setting, its reference too: only dtype and options can differ

    def _stats(self, sampler, point: Point, noise, labels) -> dict[str, Any]:
        """The decoding passes of the point's own batch, from one untimed `generate`, for a port
        that reports them (``make_generate_with_stats``); {} otherwise."""
        from adapters import get_spec

        if point.part == DECODER or not hasattr(import_module(get_spec(point.model).jax_port),
                                                "make_generate_with_stats"):
            return {}
        options = dict(self.settings[(point.model, point.variant)].options)
        sampler.generate(noise, labels, guidance=self.config.guidance, **options)
        return dict(sampler.last_stats)

    def _prepare(self, built: Built, info: ModelInfo, point: Point) -> Prepared:
        """Compile the point ahead of time (its compilation is a row of its own), then place its
        real inputs: noise and labels from the sweep's seed (for the decoder alone, latents the
        generator made beforehand)."""
        c, bs, sampler = self.config, point.batch_size, built.sampler
        settings = self._point_settings(built, info, point, sampler.decoder_params)
        config: dict[str, Any] = {**self._point_config(point, built.compiled_what), "timer": self.timer_name}
        config.pop("threads")  # the torch runner's intra-op threads say nothing of XLA's
        options = dict(self.settings[(point.model, point.variant)].options)
        call, _ = sampler.compile(point.part, bs, guidance=c.guidance, **options)
        self.run.add(**settings, metric=COMPILE_MS, value=call.compile_s * 1e3, n=1,
                     config={**config, "chips": call.num_devices})
        noise = sample_noise(c.seed, range(bs), info.sample_shape).numpy()
        labels = sample_labels(c.seed, range(bs), info.num_classes)
        labels = None if labels is None else labels.numpy()
        if point.part == DECODER:
            latents = np.asarray(sampler.generate(noise, labels, guidance=c.guidance, **options), dtype=np.float32)
            args = sampler.arguments(DECODER, bs, latents, None)
        else:
            args = sampler.arguments(point.part, bs, noise, labels)
        mem_mb = None if call.memory_bytes is None else call.memory_bytes / 2**20
        config["memory"] = "xla memory_analysis, per device"
        return self._prepared(point, info, lambda: call.call(args), settings, config, chips=call.num_devices,
                              peak_mb=mem_mb, stats=self._stats(sampler, point, noise, labels))

    @staticmethod
    def _is_oom(exc: Exception) -> bool:
        return "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower()
