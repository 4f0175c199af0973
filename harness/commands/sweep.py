"""`nfebench sweep`: a grid of settings per model, each measured for quality and for time in one run.

Each model's settings are the cartesian product of its ``--grid`` axes (its family's
``generate`` options, and ``guidance``), plus its ``--options`` settings (`harness.sweep.grid`).
Every setting is sampled from the same seed, N and per-index noise and labels and measured as
``nfebench eval`` measures (FID, KID, IS, precision/recall, FD-DINOv2 with their intervals; IS and
FD-DINOv2 only where their weights are here, and the run says when they are not), then timed
as ``nfebench bench`` times (ms per image with its interval, at each batch size), in alternating
rounds against the model's baseline setting, so each ratio to it survives drift. Costs: each
setting's NFE, and its sampling and feature throughput during the quality pass.

``--work-dir`` makes it resumable per setting: a rerun skips finished settings (their rows are
reported again, bit for bit) and resumes a quality pass shard by shard; a rerun with another
grid extends the sweep and says which settings it adds. The run file and its pyperf JSON are
rewritten (atomically) after every setting. Rows per setting (each with ``config.options`` and
``config.sweep``, its run id and baseline): those ``nfebench eval`` writes, those ``nfebench bench``
writes per batch size, a ``speedup`` over the baseline (``config.basis`` "sweep baseline"), and
``sample_images_per_s`` and ``feature_images_per_s``; the leaderboard makes the frontier of quality
against latency from them.

Example::

    nfebench sweep --models rf-mini,biflow-mini --grid rf-mini:num_steps=1,2,4,8 \\
        --grid biflow-mini:guidance=0,0.5,1,2 --checkpoint rf-mini=rf.pt --checkpoint biflow-mini=bf.pt \\
        --num-samples 200 --ref digits-heldout-stats.npz --seed 0 --metrics fid,kid,pr \\
        --batch-sizes 1,64 --device cpu --work-dir runs/mini-sweep --out results/local/mini-sweep.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.commands.bench import (  # bench's comma-separated ids and integers
    _ids,
    _ints,
)
from harness.commands.fid import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    from harness.metrics.bootstrap import BOOTSTRAP_REPLICATES
    from harness.metrics.kid import KID_SUBSET_SIZE, KID_SUBSETS
    from harness.metrics.preprocess import ADM, MODES
    from harness.sweep.driver import DEFAULT_MAX_SETTINGS, LOCAL_DIR
    from harness.timing.config import DECODE_CHOICES, DTYPES
    from harness.timing.stats import DEFAULT_CI_TARGET
    from harness.workdir import DEFAULT_SHARD_SIZE

    p.add_argument("--models", type=_ids, required=True, help="comma-separated model ids")
    p.add_argument("--grid", action="append", metavar="[MODEL:]AXIS=V1,V2,...",
                   help="one axis of settings: a generate option of the family (e.g. num_steps, decoding) or "
                        "guidance; MODEL: for one model, else every model that has the axis; repeatable, the "
                        "settings are the product of a model's axes")
    p.add_argument("--options", action="append", metavar="[MODEL:]KEY=VALUE,...",
                   help="one more setting (as nfebench bench --options; tuples as 1/1/1/8), repeatable")
    p.add_argument("--baseline", action="append", metavar="[MODEL:]KEY=VALUE,...",
                   help="the setting the model's others are timed against (MODEL:defaults for its defaults; "
                        "default: its first setting)")
    p.add_argument("--checkpoint", action="append", metavar="[MODEL=]PATH",
                   help="checkpoint file; with several models MODEL=PATH, repeatable (others: random weights)")
    p.add_argument("--set", dest="overrides", action="append", metavar="[MODEL:]KEY=VALUE,...",
                   help="config overrides, as for nfebench eval; MODEL: limits them to one model; repeatable")
    p.add_argument("--num-samples", type=int, required=True,
                   help="N of every setting (10,000 for a sweep with intervals; 50,000 for FID-50K)")
    p.add_argument("--ref", required=True,
                   help="reference: ADM reference batch, statistics .npz, image .npz or image folder")
    p.add_argument("--seed", type=int, required=True, help="sample i of every setting from (seed, i)")
    p.add_argument("--metrics", default="fid",
                   help="comma-separated subset of fid,is,sfid,pr,dc,kid,fd_dinov2 (default fid)")
    p.add_argument("--mode", choices=MODES, default=ADM, help="Inception preprocessing: adm (default) or clean")
    p.add_argument("--inception-weights", metavar="PATH", help="torch-fidelity's Inception weights, for IS")
    p.add_argument("--dinov2-weights", metavar="PATH", help="dinov2_vitl14_pretrain.pth, for fd_dinov2")
    p.add_argument("--kid-subsets", type=positive_int, default=KID_SUBSETS, help=f"default {KID_SUBSETS}")
    p.add_argument("--kid-subset-size", type=positive_int, default=KID_SUBSET_SIZE, help=f"default {KID_SUBSET_SIZE}")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP_REPLICATES, metavar="B",
                   help=f"replicates per 95%% interval (default {BOOTSTRAP_REPLICATES}; 0: none)")
    p.add_argument("--eval-batch-size", type=positive_int,
                   help="images per call of the quality passes (default: the largest of --batch-sizes)")
    p.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE,
                   help=f"samples per shard of a quality pass, the unit of resumption (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--batch-sizes", type=_ints, default=(1,), help="batch sizes each setting is timed at (default 1)")
    p.add_argument("--decode", choices=DECODE_CHOICES, default="on",
                   help="time with the decode (on, default: the cost of an image), without (off), or both")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="sampler dtype (default float32)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before each timed point (default 1)")
    p.add_argument("--repeats", type=int, default=20, help="most timed calls per point (default 20)")
    p.add_argument("--max-time", type=float, default=10.0,
                   help="seconds of timed calls per point; with the baseline twice that (default 10)")
    p.add_argument("--ci-target", type=float, default=DEFAULT_CI_TARGET,
                   help=f"stop a point once its interval's half-width is this fraction of its median "
                        f"(default {DEFAULT_CI_TARGET})")
    p.add_argument("--no-calibration", action="store_true", help="skip the calibration workload")
    p.add_argument("--max-settings", type=int, default=DEFAULT_MAX_SETTINGS,
                   help=f"most settings a sweep runs without --yes (default {DEFAULT_MAX_SETTINGS})")
    p.add_argument("--yes", action="store_true", help="run a grid of more than --max-settings settings")
    p.add_argument("--work-dir", metavar="DIR",
                   help="the sweep's work dir: a rerun resumes it, another grid extends it (default: a temporary "
                        "folder, not resumable)")
    p.add_argument("--out", type=Path,
                   help=f"run file (default {LOCAL_DIR}/sweep-<name>-<device>-<run id>.csv, git-ignored)")
    p.add_argument("--pyperf-json", type=Path, help="pyperf file (default: the run file's name with .pyperf.json)")
    p.add_argument("--name", help="the sweep's name in the default run file name (default: the models)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def request_of(args: argparse.Namespace):
    """The `harness.sweep.SweepRequest` of parsed arguments."""
    from harness.commands.fid import metric_options
    from harness.sweep import SweepRequest

    return SweepRequest(
        models=args.models, num_samples=args.num_samples, reference=args.ref, seed=args.seed,
        grid=tuple(args.grid or ()), options=tuple(args.options or ()), baselines=tuple(args.baseline or ()),
        checkpoints=tuple(args.checkpoint or ()), overrides=tuple(args.overrides or ()), metrics=args.metrics,
        metric_options=metric_options(args), eval_batch_size=args.eval_batch_size, shard_size=args.shard_size,
        batch_sizes=args.batch_sizes, decode=args.decode, device=args.device, dtype=args.dtype, warmup=args.warmup,
        repeats=args.repeats, max_time=args.max_time, ci_target=args.ci_target, calibrate=not args.no_calibration,
        max_settings=args.max_settings, confirmed=args.yes, work_dir=args.work_dir, out=args.out,
        pyperf_json=args.pyperf_json, name=args.name, progress=not args.no_progress)


def summary_table(rows: list[dict]):
    """One line per setting: its NFE, quality (value [interval]), ms per image per batch size,
    and its speed-up over its model's baseline at the largest batch size."""
    from rich.markup import escape
    from rich.table import Table

    from harness.results import MS_PER_IMAGE, QUALITY_METRICS, SPEEDUP
    from harness.settings import label

    def cell(r):
        v = float(r["value"])
        ci = "" if r.get("ci_low") in (None, "") else f" [{float(r['ci_low']):.3g}, {float(r['ci_high']):.3g}]"
        return f"{v:.4g}{ci}"

    settings: dict[str, dict] = {}
    for r in rows:
        if r["model"] == "calibration" or r.get("status") != "ok":
            continue
        config = r["config"] if isinstance(r["config"], dict) else json.loads(r["config"] or "{}")
        s = settings.setdefault(label(r["model"], config.get("options") or {}), {"nfe": r["nfe"]})
        if r["metric"] in QUALITY_METRICS:
            s[r["metric"]] = cell(r)
        elif r["metric"] == MS_PER_IMAGE:
            s[f"ms b{r['batch_size']} {r['decode']}"] = cell(r)
        elif r["metric"] == SPEEDUP:
            s[f"x b{r['batch_size']} {r['decode']}"] = cell(r)
    keys = list(dict.fromkeys(k for s in settings.values() for k in s if k != "nfe"))
    quality = [k for k in QUALITY_METRICS if k in keys]
    times = [k for k in keys if k.startswith("ms ")]
    speedups = [k for k in keys if k.startswith("x ")][-1:]
    table = Table(title="nfebench sweep: quality [95%], ms per image [95%], speed-up over the model's baseline")
    for col in ("setting", "NFE", *quality, *times, *speedups):
        table.add_column(col.replace("x b", "speed-up b"), justify="left" if col == "setting" else "right")
    for name, s in settings.items():
        table.add_row(escape(name), str(s["nfe"]), *(s.get(k, "") for k in (*quality, *times, *speedups)))
    return table


def run(args: argparse.Namespace) -> int:
    import sys

    from harness.sweep import plan_sweep, run_planned
    from harness.timing.summary import console_for

    plan = plan_sweep(request_of(args))  # every check before any work: exit 2 with nothing written
    result = run_planned(plan, log=lambda line: print(f"nfebench sweep: {line}", file=sys.stderr))
    table = summary_table(result.rows)
    console = console_for(table)
    console.print(table)
    console.print(f"run file: {result.out}\npyperf:   {result.pyperf_json}")
    for line in result.errors:
        console.print(f"[red]failed[/red] {line}")
    return 1 if result.errors else 0
