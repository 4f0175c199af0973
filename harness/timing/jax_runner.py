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
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from adapters.jax.sampler import jax_device_name, jax_devices, require_jax
from harness.errors import InputError
from harness.results import CALIBRATION_MS, COMPILE_MS, RunFile
from harness.sampler import ModelInfo, weights_with_decoder
from harness.seeding import sample_labels, sample_noise
from harness.timing.clocks import WallClock, measure, median_mad
from harness.timing.peaks import flops_per_image, peak_flops
from harness.timing.sweep import (CALIBRATION_ID, DECODER, DECODER_ID, END_TO_END, GENERATOR, Point, SweepConfig,
                                  _benchmark_name, _Runner)


class JaxRunner(_Runner):
    backend = "jax"
    timer_name = "time.perf_counter+block_until_ready"

    def __init__(self, config: SweepConfig, run: RunFile, progress: bool):
        # Not the torch runner's __init__: there is no torch device to resolve here.
        jax = require_jax()
        self.config = config
        self.run = run
        self.devices = jax_devices(config.device)
        self.platform = self.devices[0].platform
        self.device_name = jax_device_name(self.devices[0])
        self.clock = WallClock(sync=jax.block_until_ready)
        self.peak = peak_flops(self.device_name, config.dtype)  # per chip
        self.benchmarks = []
        self.errors: list[str] = []
        self.progress = progress

    def _free_memory(self) -> None:
        import gc

        gc.collect()

    def calibrate(self) -> None:
        """The torch runner's calibration workload (float32 matmuls), in jax.numpy."""
        import jax
        import jax.numpy as jnp

        n, reps = (512, 40) if self.platform == "cpu" else (8192, 100)
        rng = np.random.default_rng(0)
        a = jax.device_put(rng.standard_normal((n, n), dtype=np.float32), self.devices[0])
        b = jax.device_put(rng.standard_normal((n, n), dtype=np.float32), self.devices[0])

        @jax.jit
        def work(a, b):
            return jax.lax.fori_loop(0, reps, lambda _, c: jnp.matmul(b, c) * (1.0 / n**0.5), a)

        work.lower(a, b).compile()
        timing = measure(lambda: work(a, b), self.clock, warmup=1, repeats=5)
        med, mad = median_mad([v * 1e3 for v in timing.values])
        description = f"float32 matmul {n}x{n} x{reps} (jax)"
        self.run.add(model=CALIBRATION_ID, backend=self.backend, device=self.platform, device_name=self.device_name,
                     dtype="float32", compiled=True, seed=0, metric=CALIBRATION_MS, value=med, spread=mad,
                     n=timing.n, config={"workload": description})
        self._pyperf(CALIBRATION_ID, timing, {"workload": description})

    def _run_model(self, model: str, compiled: bool, points: list[Point], info: ModelInfo, bar) -> None:
        from adapters import load_sampler

        bar.set_postfix_str(f"building {model} (jax)")
        try:
            sampler = load_sampler(model, backend="jax", device=self.config.device, dtype=self.config.dtype)
            decoding = any(p.part != GENERATOR for p in points)
            dec_weights = sampler.decoder_weights if decoding else None
        except InputError:
            raise
        except Exception as exc:
            self._failed(info, Point(model, True, points[0].batch_size, GENERATOR), exc)
            bar.update(len(points))
            return
        try:
            for point in points:
                point = Point(point.model, True, point.batch_size, point.part)  # XLA always compiles
                bar.set_postfix_str(f"{model} bs={point.batch_size} decode={point.part} (jax)")
                self._run_point(sampler, info, point, dec_weights, "xla")
                bar.update(1)
        finally:
            del sampler
            self._free_memory()

    def _run_point(self, sampler, info: ModelInfo, point: Point, dec_weights: str | None,
                   compiled_what: str | None) -> None:
        c, bs = self.config, point.batch_size
        latent = info.space == "latent"
        weights = weights_with_decoder(info.weights, dec_weights if point.part == END_TO_END and latent else None)
        settings = self._settings(info, point, weights)
        if point.part == DECODER:
            settings = self._settings(None, point, str(dec_weights), model=DECODER_ID, family=DECODER_ID,
                                      params=sampler.decoder_params, nfe=1)
        config: dict[str, Any] = {"warmup": c.warmup, "repeats": c.repeats, "max_time": c.max_time,
                                  "timer": self.timer_name, "compiled": compiled_what}
        if point.part == DECODER:
            config["decoder_of"] = point.model
        timing = None
        try:
            call, args = self._compiled_point(sampler, info, point)
            self._compile_row(settings, config, call)
            fn: Callable[[], Any] = lambda: call.call(args)  # noqa: E731
            timing = measure(fn, self.clock, warmup=c.warmup, repeats=c.repeats, max_time=c.max_time)
        except InputError:
            raise
        except Exception as exc:
            self._failed(info, point, exc, settings=settings, config=config)
        if timing is None:
            self._free_memory()
            return
        flops = bs * flops_per_image(info, generator=point.part != DECODER, decode=point.part != GENERATOR)
        mem_mb = None if call.memory_bytes is None else call.memory_bytes / 2**20
        config = {**config, "memory": "xla memory_analysis, per device"}
        self._timing_rows(settings, config, timing, mem_mb, flops, chips=call.num_devices)
        self._pyperf(_benchmark_name(settings), timing, settings)

    def _compiled_point(self, sampler, info: ModelInfo, point: Point):
        """Compile the point, then place its real inputs: noise and labels from the
        sweep's seed (for the decoder alone, latents the generator made beforehand)."""
        c, bs = self.config, point.batch_size
        call, _ = sampler.compile(point.part, bs, guidance=c.guidance)
        noise = sample_noise(c.seed, range(bs), info.sample_shape).numpy()
        labels = sample_labels(c.seed, range(bs), info.num_classes)
        labels = None if labels is None else labels.numpy()
        if point.part == DECODER:
            latents = np.asarray(sampler.generate(noise, labels, guidance=c.guidance), dtype=np.float32)
            return call, sampler.arguments(DECODER, bs, latents, None)
        return call, sampler.arguments(point.part, bs, noise, labels)

    def _compile_row(self, settings: dict[str, Any], config: dict[str, Any], call) -> None:
        self.run.add(**settings, metric=COMPILE_MS, value=call.compile_s * 1e3, n=1,
                     config={**config, "chips": call.num_devices})

    @staticmethod
    def _is_oom(exc: Exception) -> bool:
        return "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower()

