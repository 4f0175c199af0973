"""`nfebench leaderboard`: regenerate the leaderboard CSV and Markdown tables, the frontier of
quality against latency, the Pareto plot and the frontier plots.

By default from the committed inputs only (results/published.csv and the curated runs in
results/runs/), into results/. ``--include-local`` adds the user's own runs (results/local/,
where `nfebench bench` writes) and writes the tables there instead, never over the committed ones.
``--budgets 1,10,100`` sets the budgets (ms per image) of the best-within-a-budget table; a
budget that is not a positive number exits 2 before anything is written.
"""

from __future__ import annotations

import argparse

from harness import leaderboard


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--published", default=str(leaderboard.DEFAULT_PUBLISHED), help="paper rows (default: %(default)s)")
    p.add_argument("--runs", default=str(leaderboard.DEFAULT_RUNS),
                   help="folder of curated run files *.csv, searched recursively (default: %(default)s)")
    p.add_argument("--include-local", action="store_true",
                   help=f"also read your own runs in --local (what `nfebench bench` writes) and write the tables to "
                        f"--out, by default {leaderboard.DEFAULT_LOCAL}: never over the committed tables")
    p.add_argument("--local", default=str(leaderboard.DEFAULT_LOCAL),
                   help="folder of your own run files, read with --include-local (default: %(default)s)")
    p.add_argument("--out", help=f"output folder (default: {leaderboard.DEFAULT_OUT}; with --include-local: "
                                 f"{leaderboard.DEFAULT_LOCAL})")
    p.add_argument("--budgets", default=",".join(f"{b:g}" for b in leaderboard.DEFAULT_BUDGETS),
                   help="ms per image budgets of the best-within-a-budget table, comma-separated, each positive "
                        "(default: %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="skip pareto.png and the frontier plots (no matplotlib needed)")


def run(args: argparse.Namespace) -> int:
    budgets = leaderboard.parse_budgets(args.budgets)  # before anything is written
    out = args.out or (leaderboard.DEFAULT_LOCAL if args.include_local else leaderboard.DEFAULT_OUT)
    paths = leaderboard.write_leaderboard(args.published, args.runs, out, plot=not args.no_plot,
                                          local=args.local if args.include_local else None, budgets=budgets)
    for name in paths.values():
        print(f"wrote {name}")
    return 0
