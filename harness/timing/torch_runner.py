"""The sweep's PyTorch runner: `harness.timing.runner.Runner` with the steps of torch.

- Samplers are loaded on the sweep's device in its dtype; ``--compile torch`` wraps the
  network (and the SD-VAE decoder when a decode is timed) in ``torch.compile``
  (`compile_sampler`), and the warm-up calls take the compilation.
- Every call is timed by the device's clock (`harness.timing.clocks.clock_for`: CUDA events
  on a GPU, ``time.perf_counter`` on the CPU); noise and labels are on the device before
  the clock starts.
- Peak memory is measured over the warm-up calls (`harness.timing.memory.PeakMemory`); with
  two models of a pair built side by side, a CUDA figure counts only the member's own tensors
  and what its call allocates.
- The rows' ``config`` names the clock class (``timer``) and torch's intra-op threads.

Example::

    runner = TorchRunner(config, RunFile("results/local/r.csv"), progress=False, settings=settings)
    runner.calibrate()
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from adapters.api.errors import InputError
from adapters.api.sampler import ModelInfo, Sampler
from harness.devices import device_name, resolve_device
from harness.results import RunFile
from harness.timing.clocks import clock_for
from harness.timing.config import DTYPES, SweepConfig
from harness.timing.memory import PeakMemory
from harness.timing.peaks import peak_flops
from harness.timing.plan import END_TO_END, GENERATOR, Point, Setting
from harness.timing.rows import Prepared
from harness.timing.runner import Built, Runner


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


class TorchRunner(Runner):
    """The sweep's points timed in PyTorch on one device (`Runner` holds the flow and the rows)."""

    backend = "torch"

    def __init__(self, config: SweepConfig, run: RunFile, progress: bool, settings: dict[tuple[str, int], Setting]):
        self.device = resolve_device(config.device)
        self.dtype = DTYPES[config.dtype]
        name = device_name(self.device)
        tf32 = self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
        super().__init__(config, run, progress, settings, platform=self.device.type, device_name=name,
                         clock=clock_for(self.device), peak=peak_flops(name, config.dtype, tf32=tf32),
                         feature_device=str(self.device))

    @property
    def timer_name(self) -> str:
        return "CUDA events" if self.platform == "cuda" else "time.perf_counter"

    @property
    def clock_name(self) -> str:
        return type(self.clock).__name__

    def _backend_config(self) -> dict[str, Any]:
        return {"threads": torch.get_num_threads()}

    def _placement(self, dtype: str) -> dict[str, Any]:
        return {"device": self.device, "dtype": DTYPES[dtype]}

    def _matmul_loop(self, n: int, reps: int, dtype: str) -> Callable[[], torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(self.device, DTYPES[dtype])  # (n, n)
        b = torch.randn(n, n, generator=g).to(self.device, DTYPES[dtype])  # (n, n)

        def work() -> torch.Tensor:
            c = a
            for _ in range(reps):
                c = torch.mm(b, c) * (1.0 / n**0.5)  # rescaled so values stay finite
            return c

        return work

    def _memory(self, built: dict[str, Built]) -> Callable[[str], PeakMemory]:
        """Peak memory regions per member (member -> its model's build); with other models built
        beside it (a pair), a CUDA figure counts only the member's own tensors and what its call allocates."""
        shared = len({id(b) for b in built.values()}) > 1
        return lambda member: PeakMemory(self.device, own_bytes=built[member].own_bytes if shared else None)

    def _free(self) -> None:
        super()._free()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _is_oom(self, exc: Exception) -> bool:
        return isinstance(exc, torch.cuda.OutOfMemoryError)  # is torch.OutOfMemoryError: CUDA and CPU

    def _build(self, model: str, compiled: bool, decoding: bool) -> Built:
        cuda = self.device.type == "cuda"
        before = torch.cuda.memory_allocated(self.device) if cuda else None
        sampler = self._load(model, self.config.dtype)
        dec_weights = getattr(sampler, "decoder_weights", None) if decoding else None  # builds the VAE now
        what = compile_sampler(sampler, decoder=decoding, backend=self.config.compile_backend) if compiled else None
        own = torch.cuda.memory_allocated(self.device) - before if cuda else None
        return Built(sampler, dec_weights, what, own)

    def _workload(self, sampler: Sampler, point: Point, noise, labels, stats: dict[str, Any]) -> Callable[[], Any]:
        """The point's timed call; the generator's statistics of each call land in `stats`."""
        c, options = self.config, dict(self.settings[(point.model, point.variant)].options)
        guidance = options.pop("guidance", c.guidance)  # a sweep's setting may set its own (setting_guidance)

        def generate():
            out = sampler.generate(noise, labels, guidance=guidance, **options)
            stats.clear()
            stats.update(getattr(sampler, "last_stats", None) or {})
            return out

        if point.part == GENERATOR:
            return generate
        if point.part == END_TO_END:
            return lambda: sampler.decode(generate())
        latents = generate()  # the decoder alone: its latents are made before the clock starts
        return lambda: sampler.decode(latents)

    def _prepare(self, built: Built, info: ModelInfo, point: Point) -> Prepared:
        settings = self._point_settings(built, info, point)
        config = self._point_config(point, built.compiled_what)
        noise, labels = self._inputs(info, point.batch_size)
        noise = noise.to(self.device, self.dtype)  # (N, *sample_shape)
        labels = None if labels is None else labels.to(self.device)  # (N,)
        stats: dict[str, Any] = {}
        fn = self._workload(built.sampler, point, noise, labels, stats)
        return self._prepared(point, info, fn, settings, config, stats=stats)
