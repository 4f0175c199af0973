"""The sweep's JAX runner: `harness.timing.runner.Runner` with the steps of JAX, so the same
points and rows as the PyTorch runner, timed the JAX way.

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
- Everything else is `Runner`'s: adaptive repeats with the median's interval, pairs in
  alternating rounds with ``speedup`` rows, and ``frac_matmul_peak`` against the matmul
  FLOP/s of one chip measured in jax.numpy (the calibration's, in the run's dtype).

Example::

    runner = JaxRunner(with_preset("tpu", models=("biflow-b2",)), RunFile(out), False, settings)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from adapters import get_spec
from adapters.api.devices import jax_device_name, jax_devices, require_jax
from adapters.api.sampler import ModelInfo
from harness.results import COMPILE_MS, RunFile
from harness.timing.clocks import WallClock
from harness.timing.config import SweepConfig
from harness.timing.peaks import peak_flops
from harness.timing.plan import DECODER, Point, Setting
from harness.timing.rows import Prepared
from harness.timing.runner import Built, Runner


class JaxRunner(Runner):
    """The sweep's points timed in JAX on every local device of the platform."""

    backend = "jax"
    timer_name = clock_name = "time.perf_counter+block_until_ready"
    always_compiled = True  # XLA compiles every setting, its reference too: only dtype and options can differ
    splits_batch = True
    workload_note = " (jax)"

    def __init__(self, config: SweepConfig, run: RunFile, progress: bool, settings: dict[tuple[str, int], Setting]):
        jax = require_jax()
        self.devices = jax_devices(config.device)
        name = jax_device_name(self.devices[0])
        super().__init__(config, run, progress, settings, platform=self.devices[0].platform, device_name=name,
                         clock=WallClock(sync=jax.block_until_ready), peak=peak_flops(name, config.dtype),
                         feature_device="cpu")

    def _placement(self, dtype: str) -> dict[str, Any]:
        return {"backend": "jax", "device": self.config.device, "dtype": dtype}

    def _matmul_loop(self, n: int, reps: int, dtype: str) -> Callable[[], Any]:
        """The calibration's matmul loop in jax.numpy on the first device, compiled before it is timed."""
        import jax
        import jax.numpy as jnp

        rng = np.random.default_rng(0)
        a, b = (jax.device_put(jnp.asarray(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype),
                               self.devices[0]) for _ in range(2))  # (n, n) each

        @jax.jit
        def work(a, b):
            return jax.lax.fori_loop(0, reps, lambda _, c: jnp.matmul(b, c) * (1.0 / n**0.5), a)

        compiled = work.lower(a, b).compile()
        return lambda: compiled(a, b)

    def _is_oom(self, exc: Exception) -> bool:
        return "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower()

    def _build(self, model: str, compiled: bool, decoding: bool) -> Built:
        sampler = self._load(model, self.config.dtype)
        return Built(sampler, sampler.decoder_weights if decoding else None, "xla")

    def _stats(self, sampler, point: Point, noise, labels) -> dict[str, Any]:
        """The decoding passes of the point's own batch, from one untimed `generate`, for a port
        that reports them (``make_generate_with_stats``); {} otherwise."""
        if point.part == DECODER or not hasattr(get_spec(point.model).resolve("jax_port"), "make_generate_with_stats"):
            return {}
        options = dict(self.settings[(point.model, point.variant)].options)
        sampler.generate(noise, labels, guidance=self.config.guidance, **options)
        return dict(sampler.last_stats)

    def _prepare(self, built: Built, info: ModelInfo, point: Point) -> Prepared:
        """Compile the point ahead of time (its compilation is a row of its own), then place its
        real inputs: noise and labels from the sweep's seed (for the decoder alone, latents the
        generator made beforehand)."""
        c, bs, sampler = self.config, point.batch_size, built.sampler
        settings = self._point_settings(built, info, point)
        config = self._point_config(point, built.compiled_what)
        options = dict(self.settings[(point.model, point.variant)].options)
        call, _ = sampler.compile(point.part, bs, guidance=c.guidance, **options)
        self.run.add(**settings, metric=COMPILE_MS, value=call.compile_s * 1e3, n=1,
                     config={**config, "chips": call.num_devices})
        noise, labels = self._inputs(info, bs)
        noise = noise.numpy()  # (N, *sample_shape)
        labels = None if labels is None else labels.numpy()  # (N,)
        if point.part == DECODER:
            latents = np.asarray(sampler.generate(noise, labels, guidance=c.guidance, **options), dtype=np.float32)
            args = sampler.arguments(DECODER, bs, latents, None)
        else:
            args = sampler.arguments(point.part, bs, noise, labels)
        mem_mb = None if call.memory_bytes is None else call.memory_bytes / 2**20
        config["memory"] = "xla memory_analysis, per device"
        return self._prepared(point, info, lambda: call.call(args), settings, config, chips=call.num_devices,
                              peak_mb=mem_mb, stats=self._stats(sampler, point, noise, labels))
