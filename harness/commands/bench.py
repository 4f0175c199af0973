"""`nfebench bench`: time models over batch sizes, with and without the SD-VAE decode.

Writes a run file (CSV rows, `harness.results` schema) and a pyperf JSON file that
``python -m pyperf compare_to old.json new.json`` compares, then prints the timings with
their intervals, each fast model's measured speed-up over its teacher (`harness.pairs`) and
the compute and latency floors. Presets: ``--preset cpu`` (tox -e bench) and ``--preset gpu``
(tox -e bench-gpu); options given explicitly override the preset.

Trained weights and sampler settings: ``--checkpoint`` (per model with several), ``--set``
config overrides and ``--options`` sampler options, each ``--options`` a setting timed as a
point of its own (syntax: `harness.settings`). Every setting that is not its own reference
(float32, eager, the family's exact decoding) is checked against it first (`harness.quality`):
deviation rows, with ``--quality-ref``/``--quality-n`` and trained weights a FID per setting,
and ``quality`` = verified, failed or unverified on its rows.

Run files go to ``results/local/`` by default: a git-ignored folder for the user's own runs.
``results/runs/`` holds the curated, committed runs the committed leaderboard is made of; a
run enters it only by a deliberate copy in a reviewed commit. ``nfebench leaderboard
--include-local`` shows local runs beside the committed ones.

Example::

    nfebench bench --preset cpu
    nfebench bench --models biflow-b2,itarflow-b2 --batch-sizes 1,4 --decode both --ci-target 0.02
    nfebench bench --models tarflow-mini --checkpoint tarflow-mini.pt --batch-sizes 1,64 \
        --options decoding=sequential --options decoding=jacobi,jacobi_tol=1e-3 \
        --quality-ref digits-heldout-stats.npz --quality-n 200
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from harness.devices import DEVICES
from harness.timing.sweep import (COMPILE_CHOICES, DECODE_CHOICES, DTYPES, PRESETS, SweepConfig,
                                  resolve_device, run_sweep, validate, with_preset)

LOCAL_DIR = Path("results/local")  # git-ignored; the leaderboard reads it only with --include-local


def _ids(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _ids(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _help(name: str) -> str:
    f = SweepConfig.__dataclass_fields__[name]
    default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else (
        f"{f.default:.3g}" if isinstance(f.default, float) else f.default)
    return f"{f.metadata['help']} (default: {default})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a named sweep: cpu (B/2 models, batch 1 and 2, float32, with and without decode), "
                        "gpu (CUDA, bfloat16, batch 1 to 256, eager and torch.compile), tpu (JAX on every TPU chip, "
                        "bfloat16, batch 1 to 256; NFEBENCH_ALLOW_CPU=1 runs it on the CPU) or ci; "
                        "options below override it")
    p.add_argument("--backend", choices=("torch", "jax"),
                   help="torch (default), or jax: the Flax ports with the same weights, XLA-compiled, the batch split "
                        "over every local device of --device (cpu, gpu, tpu; auto: JAX's default)")
    p.add_argument("--models", type=_ids, help="comma-separated model ids (default: the B/2 models of the cpu preset)")
    p.add_argument("--batch-sizes", type=_ints, help=_help("batch_sizes"))
    p.add_argument("--decode", choices=DECODE_CHOICES, help=_help("decode"))
    p.add_argument("--decode-batch-sizes", type=_ints, help=_help("decode_batch_sizes"))
    # Not `choices`: an unknown device gets nfebench's own message (exit 2) naming the valid ones.
    p.add_argument("--device", help=f"{', '.join(DEVICES)} or cuda:N (default: auto)")
    p.add_argument("--dtype", choices=tuple(DTYPES), help=_help("dtype"))
    p.add_argument("--compile", choices=COMPILE_CHOICES, help=_help("compile"))
    p.add_argument("--warmup", type=int, help=_help("warmup"))
    p.add_argument("--repeats", type=int, help=_help("repeats"))
    p.add_argument("--max-time", type=float, help=_help("max_time"))
    p.add_argument("--ci-target", type=float, help=_help("ci_target"))
    p.add_argument("--guidance", type=float, help=_help("guidance"))
    p.add_argument("--seed", type=int, help=_help("seed"))
    p.add_argument("--no-calibration", action="store_true", help="skip the calibration workload row")
    p.add_argument("--checkpoint", action="append", metavar="[MODEL=]PATH",
                   help="checkpoint file; with several models MODEL=PATH, repeatable (others: random weights)")
    p.add_argument("--set", dest="overrides", action="append", metavar="[MODEL:]KEY=VALUE,...",
                   help="config overrides, as for nfebench eval; MODEL: limits them to one model; repeatable")
    p.add_argument("--options", action="append", metavar="[MODEL:]KEY=VALUE,...",
                   help="sampler options passed to generate (e.g. decoding=jacobi,jacobi_tol=1e-3; a per-block "
                        "tuple as 1/1/1/8), repeatable: each one a setting timed on its own; MODEL: for one model")
    p.add_argument("--no-quality", action="store_true",
                   help="no quality check of the settings that differ from their reference (rows: unverified)")
    p.add_argument("--quality-tol", type=float, help=_help("quality_tol"))
    p.add_argument("--quality-fid-rtol", type=float, help=_help("quality_fid_rtol"))
    p.add_argument("--quality-samples", type=int, help=_help("quality_samples"))
    p.add_argument("--quality-ref", metavar="REF", help=_help("quality_ref"))
    p.add_argument("--quality-n", type=int, metavar="N", help=_help("quality_n"))
    p.add_argument("--out", type=Path,
                   help="run file to create, in a folder that exists (default: "
                        f"{LOCAL_DIR}/bench-<preset>-<backend>-<device>-<run id>.csv, git-ignored)")
    p.add_argument("--pyperf-json", type=Path,
                   help="pyperf JSON file to create (default: the run file's name with .pyperf.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from adapters import model_info
    from harness.results import new_provenance
    from harness.settings import parse_checkpoints, parse_option_sets, parse_overrides
    from harness.timing.summary import console_for, floors_table, speedup_table, timing_table

    config = with_preset(args.preset, backend=args.backend, models=args.models, batch_sizes=args.batch_sizes,
                         decode=args.decode, decode_batch_sizes=args.decode_batch_sizes, device=args.device,
                         dtype=args.dtype, compile=args.compile, warmup=args.warmup, repeats=args.repeats,
                         max_time=args.max_time, ci_target=args.ci_target, guidance=args.guidance, seed=args.seed,
                         calibrate=False if args.no_calibration else None, quality=False if args.no_quality else None,
                         quality_tol=args.quality_tol, quality_fid_rtol=args.quality_fid_rtol,
                         quality_samples=args.quality_samples, quality_ref=args.quality_ref, quality_n=args.quality_n)
    models = config.models
    config = dataclasses.replace(config, checkpoints=parse_checkpoints(args.checkpoint, models),
                                 overrides=parse_overrides(args.overrides, models),
                                 options=parse_option_sets(args.options, models))
    validate(config)  # fails early (exit 2): unknown ids, CUDA or a TPU asked for and absent, JAX not installed
    provenance = new_provenance()
    where = config.device if config.backend == "jax" else resolve_device(config.device).type
    out = args.out
    if out is None:
        LOCAL_DIR.mkdir(parents=True, exist_ok=True)
        out = LOCAL_DIR / f"bench-{args.preset or 'custom'}-{config.backend}-{where}-{provenance['run_id']}.csv"
    pyperf_json = args.pyperf_json or out.with_name(out.stem + ".pyperf.json")
    console = Console()
    try:
        result = run_sweep(config, out, pyperf_json, progress=not args.no_progress, provenance=provenance)
    except KeyboardInterrupt:
        console.print(f"interrupted: every point finished so far is in {out} (and {pyperf_json})")
        raise
    infos = {m: model_info(m, **dict(config.overrides.get(m, {}))) for m in config.models}
    tables = (timing_table(result.rows, title=f"nfebench bench ({config.device}, {config.dtype})"),
              speedup_table(result.rows), floors_table(result.rows, infos))
    console = console_for(*tables)
    for table in tables:
        console.print(table)
    console.print(f"run file: {out}\npyperf:   {pyperf_json}  (compare: python -m pyperf compare_to OLD.json NEW.json)")
    for line in result.errors:
        console.print(f"[red]failed[/red] {line}")
    return 1 if result.errors else 0
