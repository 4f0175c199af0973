"""`nfebench track mini`: train the mini track's models where missing, evaluate and time them.

Run files go to results/local/ (git-ignored) unless ``--out-dir`` says otherwise; the curated,
committed run is made with ``--out-dir results/runs``.

Example::

    nfebench track mini                              # the full budget, into results/local/
    nfebench track mini --out-dir results/runs       # the committed run (results/runs/mini-full-*)
    nfebench track mini --budget ci                  # the reduced budget the CI gate checks
    nfebench track mini --quick                      # the full budget, sweeping fewer settings
"""

from __future__ import annotations

import argparse
from pathlib import Path

TRACKS = ("mini",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from harness.track import BUDGETS, RUNS_DIR

    p.add_argument("track", choices=TRACKS, help="which track (only mini so far)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="full",
                   help="full: the committed schedule; ci: the reduced one of the CI gate (default: full)")
    p.add_argument("--cache", type=Path,
                   help="checkpoint folder (default: $NFEBENCH_CACHE/mini, else ~/.cache/nfebench/mini)")
    p.add_argument("--out-dir", "--runs-dir", dest="out_dir", type=Path, default=RUNS_DIR,
                   help=f"where run files go (default: {RUNS_DIR}, git-ignored; the committed run: results/runs)")
    p.add_argument("--quick", action="store_true",
                   help="sweep fewer settings of the trained models (rf-mini at 1 and 2 steps, biflow-mini at "
                        "guidance 0 and 1), as the ci budget does")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from harness.timing.summary import console_for
    from harness.track import BUDGETS, HALF, MODELS, RANDOM, quick, run_track

    budget = quick(BUDGETS[args.budget]) if args.quick else BUDGETS[args.budget]
    result = run_track(budget, runs_dir=args.out_dir, cache=args.cache, progress=not args.no_progress)
    table = Table(title=f"mini track ({args.budget}): FID vs the held-out digits")
    for col in ("model", "trained", "half steps", "random weights"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in MODELS:
        cells = [result.fids.get(k) for k in (m, f"{m}@{HALF}", f"{m}@{RANDOM}")]
        table.add_row(m, *("" if v is None else f"{v:.2f}" for v in cells))
    tables = [table]
    if result.setting_fids:
        settings = Table(title="the quality gate's FIDs of the timed settings (same weights, N and seed)")
        for col in ("setting", "dtype", "FID"):
            settings.add_column(col, justify="right" if col == "FID" else "left")
        for key, fid in result.setting_fids.items():
            name, dtype = key.rsplit("@", 1)
            settings.add_row(escape(name), dtype, f"{fid:.2f}")
        tables.append(settings)
    console = console_for(*tables)
    for t in tables:
        console.print(t)
    for role, path in result.run_files.items():
        console.print(f"{role + ':':9} {path}")
    console.print(f"manifest: {result.manifest}")
    for path in (result.bench_file, result.bench_bf16_file):
        if path:
            console.print(f"timings:  {path}")
    if result.sweep_file:
        console.print(f"sweep:    {result.sweep_file} ({result.sweep_seconds / 60:.1f} min)")
    console.print(f"track wall time: {result.seconds / 60:.1f} min")
    return 0
