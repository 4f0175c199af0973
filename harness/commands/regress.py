"""`nfebench regress`: compare a run file with a baseline; exit 1 on a regression, 2 on unusable input.

A timing regresses only when the current run's 95% interval, after the calibration ratio, lies
beyond the baseline's by --time-rtol (`harness.regress`)."""

from __future__ import annotations

import argparse

from harness import regress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", required=True, help="baseline run file, e.g. results/baselines/cpu.csv")
    p.add_argument("--current", required=True, help="run file to check, e.g. results/runs/<run>.csv")
    p.add_argument("--time-rtol", type=float, default=regress.DEFAULT_TIME_RTOL,
                   help="how far beyond the baseline's 95%% interval the current interval must lie, relative to the "
                        "baseline, for a timing to count as changed (default: %(default)s)")
    p.add_argument("--metric-atol", type=float, default=regress.DEFAULT_METRIC_ATOL,
                   help="absolute change a quality or other numeric metric must exceed (default: %(default)s)")
    p.add_argument("--spread-k", type=float, default=regress.DEFAULT_SPREAD_K,
                   help="a timing row without an interval (schema 1) stands for value +- spread-k x its spread "
                        "(default: %(default)s)")
    p.add_argument("--all", action="store_true", help="list unchanged settings too")
    p.add_argument("--other-machine", choices=("refuse", "skip"), default="refuse",
                   help="runs from different devices or backends: refuse (exit 2, the default) or skip "
                        "(print SKIPPED with the reason and exit 0, for CI machines without a baseline of their own)")


def _fmt(x: float | None) -> str:
    return "" if x is None or x != x else f"{x:.4g}"


def run(args: argparse.Namespace) -> int:
    try:
        report = regress.compare_files(args.baseline, args.current, time_rtol=args.time_rtol,
                                       metric_atol=args.metric_atol, spread_k=args.spread_k)
    except regress.OtherMachineError as exc:
        if args.other_machine == "refuse":
            raise
        print(f"nfebench regress: SKIPPED, nothing compared: {exc}")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # CI logs: wide enough that a setting fits on one line
        console = Console(width=160)
    for note in report.notes:
        console.print(note)
    shown = [c for c in report.changes if args.all or c.verdict != regress.SAME]
    table = Table(title=f"nfebench regress: {args.current} against {args.baseline}")
    for col in ("setting", "metric", "baseline", "current", "calibrated", "change", "threshold", "verdict", "note"):
        table.add_column(col, justify="right" if col in ("baseline", "current", "calibrated", "change", "threshold")
                         else "left")
    for c in shown:
        rel = c.relative
        style = "bold red" if c.regression else ("green" if c.verdict in (regress.FASTER, regress.LESS_MEMORY, regress.FIXED) else None)
        table.add_row(regress.describe(c.setting), c.metric, _fmt(c.baseline), _fmt(c.current), _fmt(c.adjusted),
                      "" if rel is None else f"{rel:+.1%}", _fmt(c.threshold), c.verdict, c.note, style=style)
    if shown:
        console.print(table)
    n_reg = len(report.regressions)
    console.print(f"{len(report.changes)} settings compared, {len(report.changes) - len(shown)} not listed (same), "
                  f"{n_reg} regression{'s' if n_reg != 1 else ''}")
    return 1 if n_reg else 0
