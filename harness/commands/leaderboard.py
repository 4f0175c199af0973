"""`nfebench leaderboard`: regenerate the leaderboard CSV, Markdown table and Pareto plot."""

from __future__ import annotations

import argparse

from harness import leaderboard


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--published", default=str(leaderboard.DEFAULT_PUBLISHED), help="paper rows (default: %(default)s)")
    p.add_argument("--runs", default=str(leaderboard.DEFAULT_RUNS),
                   help="folder searched recursively for run files *.csv (default: %(default)s)")
    p.add_argument("--out", default=str(leaderboard.DEFAULT_OUT), help="output folder (default: %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="skip pareto.png (no matplotlib needed)")


def run(args: argparse.Namespace) -> int:
    paths = leaderboard.write_leaderboard(args.published, args.runs, args.out, plot=not args.no_plot)
    for name in paths.values():
        print(f"wrote {name}")
    return 0
