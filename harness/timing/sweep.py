"""The benchmark sweep: a grid of (compile mode, model, batch size, part) points, each
timed in this process and written as result rows and as a pyperf benchmark.

`run_sweep` is the one entry point. Its parts live beside it: `harness.timing.config` (what a
run measures: `SweepConfig`, the presets, `validate`), `harness.timing.plan` (the models
checked and the points planned), `harness.timing.runner` (the backend-neutral `Runner`: the
flow, the rows, the calibration) with `harness.timing.torch_runner` and
`harness.timing.jax_runner` (each backend's steps). The names the rest of nfebench imports
from here are re-exported.

Parts of a point, and how their rows are told apart (the ``decode`` column):

- ``decode=off``: the generator alone, ``sampler.generate(noise, labels)``.
- ``decode=on``: end to end, ``sampler.decode(sampler.generate(...))`` in one timed call.
- ``decode=only``: the decoder alone, ``sampler.decode(latents)`` on latents made before the
  clock starts. Its rows are named after the decoder its family's spec declares
  (`adapters.api.sampler.DecoderInfo`, ``get_spec(id).decoder``): for the SD-VAE
  ``model="sd-vae"``, ``family="sd-vae"``, with the decoder's parameters and weights, and
  ``config.decoder_of`` naming the sampler that ran it. A decoder is the same network on the
  same latent shape for every model that decodes with it, and its compute does not depend on
  the latent values, so it is timed once per decoder, batch size (and compile mode) with the
  first model that uses it rather than once per model: on a 2-core CPU one SD-VAE image takes
  about 3.6 s.

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

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyperf

from adapters.api.errors import InputError
from harness.devices import resolve_device
from harness.results import RunFile, atomic_write
from harness.timing.config import (
    COMPILE_CHOICES,
    DECODE_CHOICES,
    DTYPES,
    PRESETS,
    TPU_MODELS,
    SweepConfig,
    validate,
    with_preset,
)
from harness.timing.plan import Point, groups, inspect_models, plan
from harness.timing.runner import END, START, Runner
from harness.timing.torch_runner import TorchRunner, compile_sampler

# The SD-VAE's `DecoderInfo.name` (adapters.vae.SD_VAE_DECODER), so the `model` of its
# decoder-alone rows; the rows take it from the family's spec, this names it for readers of them.
DECODER_ID = "sd-vae"

# Re-exported: what the CLI and the tests import from here.
__all__ = ["COMPILE_CHOICES", "DECODE_CHOICES", "DECODER_ID", "DTYPES", "PRESETS", "TPU_MODELS", "Point",
           "SweepConfig", "SweepResult", "compile_sampler", "groups", "plan", "resolve_device", "run_sweep",
           "validate", "with_preset"]


@dataclass
class SweepResult:
    """What a sweep measured: its rows (as saved), the pyperf suite (None if nothing was timed)
    and one line per point that failed other than by running out of memory."""

    rows: list[dict[str, Any]]
    suite: pyperf.BenchmarkSuite | None
    errors: list[str]


def _runner_class(backend: str) -> type[Runner]:
    if backend == "jax":
        from harness.timing.jax_runner import (
            JaxRunner,  # imports jax only when asked for
        )

        return JaxRunner
    return TorchRunner


def _check_paths(out: Path, pyperf_json: str | Path | None) -> None:
    """Refuse an output path that is not a new .csv file (or a new pyperf file) in a folder that exists."""
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
    _check_paths(out, pyperf_json)
    infos, settings = inspect_models(config)  # before the run file: a bad checkpoint or option writes nothing
    run = RunFile(out, provenance)
    runner = _runner_class(config.backend)(config, run, progress, settings)
    points = plan(config, infos)
    try:
        if config.calibrate:
            runner.calibrate(START)
        runner.run_points(points, infos)
        if config.calibrate:
            runner.calibrate(END)
    finally:
        suite = pyperf.BenchmarkSuite(runner.rows.benchmarks) if runner.rows.benchmarks else None
        if suite is not None and pyperf_json is not None:
            buf = io.StringIO()
            suite.dump(buf, compact=False)
            atomic_write(pyperf_json, buf.getvalue())
    return SweepResult(run.rows, suite, runner.errors)
