"""The leaderboard: published rows and measured run files -> CSV and Markdown tables and one plot.

Inputs are `results/published.csv` (paper figures with their evidence and citation) and every
run file under `results/runs/`, the curated runs that are committed. A user's own runs
(`nfebench bench` writes them to the git-ignored `results/local/`) enter only when asked
(``local``), and the tables made with them are written elsewhere, never over the committed
ones. Outputs are regenerated, never hand-edited:

- ``leaderboard.{csv,md}``: one row per model x setting (`board`), the Markdown with each
  interval beside its value (``49.04 [45.10, 52.90]``), a ranked FID without one marked
  ``(no interval)``;
- ``leaderboard-mini.{csv,md}`` and ``leaderboard-mini-speedup.{csv,md}``: the mini track's
  (`mini`), written whenever its run files exist; they stay out of the main table and the plot;
- ``pareto.png``: FID against generator ms per image, log axis (`plot`);
- the frontier of measured quality against measured latency (`frontier`, `budget`), always for
  the main runs (its files say when there are no points) and beside ``leaderboard-mini*`` for
  the mini track: ``leaderboard[-mini]-frontier.{csv,md}`` (every point, on the frontier or
  dominated, per metric and place of timing), ``leaderboard[-mini]-budgets.{csv,md}`` (the best
  setting within each ``--budgets`` ms per image), ``leaderboard[-mini]-optima.{csv,md}`` (each
  model's FID-, KID- and IS-optimal settings and their cost in the other metrics) and
  ``leaderboard[-mini]-frontier.png``.

The package, one job a module, each holding the rules it applies:

- `rows`: reading published rows, run files and track manifests; numeric cells as canonical
  text; which rows count (status ``ok``, a value; oom/error rows stay in the run files);
- `choice`: one row where a setting was measured more than once (never by date), and ranks
  that share a rank where the 95% intervals overlap;
- `board`, `mini`: the tables' rows; `frontier`: the points and which are dominated;
  `budget`: the best within a budget and each model's optima; `render`: a `Table` prints its
  rows as CSV (every column) and Markdown (at most ten columns);
- `plot`: the Pareto plot and the frontier plots.

A new table is a builder that returns rows and a `Table` for them, added to the list
`write_leaderboard` writes. Bytes of the tables depend only on the inputs: rows sorted,
floats to fixed decimals, no timestamps. The PNG is not covered by this promise (its pixels
depend on the matplotlib version and fonts).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable

from adapters.api.errors import InputError
from harness.leaderboard.board import BOARD, LEADERBOARD_COLUMNS, build
from harness.leaderboard.budget import (
    BUDGET_COLUMNS,
    BUDGETS_TABLE,
    DEFAULT_BUDGETS,
    OPTIMA_COLUMNS,
    OPTIMA_TABLE,
    build_budgets,
    build_optima,
    check_budgets,
    parse_budgets,
)
from harness.leaderboard.choice import (
    reference_like,
    relative_width,
    resolved_below,
    resolved_better,
    resolved_ranks,
)
from harness.leaderboard.frontier import (
    FRONTIER_COLUMNS,
    FRONTIER_METRICS,
    FRONTIER_TABLE,
    HIGHER_IS_BETTER,
    build_frontier,
    dominated_by,
)
from harness.leaderboard.mini import (
    EXACT,
    FASTEST,
    MINI_COLUMNS,
    MINI_SPEEDUP_COLUMNS,
    MINI_SPEEDUP_TABLE,
    MINI_TABLE,
    build_mini,
    build_mini_speedups,
)
from harness.leaderboard.plot import (
    pareto_front,
    pareto_points,
    plot_frontier,
    plot_pareto,
)
from harness.leaderboard.render import MAX_MARKDOWN_COLUMNS, Table
from harness.leaderboard.rows import (
    DEFAULT_LOCAL,
    DEFAULT_OUT,
    DEFAULT_PUBLISHED,
    DEFAULT_RUNS,
    EVIDENCE,
    MINI_SETTING,
    QUALITY_KEY,
    SETTING,
    is_mini,
    is_random_weights,
    options_of,
    read_manifests,
    read_published,
    read_runs,
    records,
    text,
    track_run,
)

__all__ = [
    "BOARD", "BUDGETS_TABLE", "BUDGET_COLUMNS", "DEFAULT_BUDGETS", "DEFAULT_LOCAL", "DEFAULT_OUT",
    "DEFAULT_PUBLISHED", "DEFAULT_RUNS", "EVIDENCE", "EXACT", "FASTEST", "FRONTIER_COLUMNS", "FRONTIER_METRICS",
    "FRONTIER_TABLE", "HIGHER_IS_BETTER", "LEADERBOARD_COLUMNS", "MAX_MARKDOWN_COLUMNS", "MINI_COLUMNS",
    "MINI_SETTING", "MINI_SPEEDUP_COLUMNS", "MINI_SPEEDUP_TABLE", "MINI_TABLE", "OPTIMA_COLUMNS", "OPTIMA_TABLE",
    "QUALITY_KEY", "SETTING", "TABLES", "Table", "build", "build_budgets", "build_frontier", "build_mini",
    "build_mini_speedups", "build_optima", "check_budgets", "dominated_by", "is_mini", "is_random_weights",
    "options_of", "parse_budgets", "pareto_front", "pareto_points", "plot_frontier", "plot_pareto",
    "read_manifests", "read_published", "read_runs", "records", "reference_like", "relative_width",
    "resolved_below", "resolved_better", "resolved_ranks", "text", "to_csv", "to_markdown", "track_run",
    "write_leaderboard",
]

to_csv = BOARD.to_csv  # the main board as CSV text (the old module's name)
to_markdown = BOARD.to_markdown  # ... and as Markdown

# the mini track's frontier tables: the main ones' columns, files beside leaderboard-mini*
MINI_FRONTIER_TABLE = replace(FRONTIER_TABLE, name="mini_frontier")
MINI_BUDGETS_TABLE = replace(BUDGETS_TABLE, name="mini_budgets")
MINI_OPTIMA_TABLE = replace(OPTIMA_TABLE, name="mini_optima")
# every table `write_leaderboard` can write
TABLES = (BOARD, FRONTIER_TABLE, BUDGETS_TABLE, OPTIMA_TABLE, MINI_TABLE, MINI_SPEEDUP_TABLE, MINI_FRONTIER_TABLE,
          MINI_BUDGETS_TABLE, MINI_OPTIMA_TABLE)


def _frontier_tables(rows: list[dict], budgets: tuple[float, ...], mini: bool) -> tuple[list, list[dict]]:
    """The frontier's three tables of `rows` (the main or the mini track's), and its points."""
    points = build_frontier(rows)
    tables = (MINI_FRONTIER_TABLE, MINI_BUDGETS_TABLE, MINI_OPTIMA_TABLE) if mini else (
        FRONTIER_TABLE, BUDGETS_TABLE, OPTIMA_TABLE)
    return list(zip(tables, (points, build_budgets(points, budgets), build_optima(points)))), points


def write_leaderboard(published: str | Path = DEFAULT_PUBLISHED, runs: str | Path = DEFAULT_RUNS,
                      out_dir: str | Path = DEFAULT_OUT, plot: bool = True,
                      local: str | Path | None = None, budgets: Iterable[float] = DEFAULT_BUDGETS) -> dict[str, Path]:
    """Regenerate ``leaderboard.csv``, ``leaderboard.md``, the frontier's tables, the mini track's
    tables (where its run files exist) and (if `plot`) ``pareto.png`` and the frontier plots.

    Args:
        published: the paper rows (`read_published` checks them).
        runs: folder searched recursively for run files (``*.csv``); may be empty or absent.
        out_dir: where the files are written, atomically.
        plot: draw the Pareto plot (needs matplotlib).
        local: a second folder of run files (a user's own, `DEFAULT_LOCAL`) read with `runs`;
            None reads none. `out_dir` must then not be `runs`'s parent folder, where the
            committed tables live.
        budgets: ms per image of the budgets table, each a positive number (checked before
            anything is written).

    Returns:
        Output name -> path written: ``csv``, ``md``, ``frontier_csv``, ``frontier_md``,
        ``budgets_*``, ``optima_*``, the same with ``mini_`` (``mini_csv``, ``mini_speedup_md``,
        ``mini_frontier_csv``, ...), and with `plot` ``png``, ``frontier_png`` and
        ``mini_frontier_png``.

    Example::

        paths = write_leaderboard("results/published.csv", "results/runs", "results")
        print(paths["csv"].read_text().splitlines()[0])  # fid_rank,model,family,...
        mine = write_leaderboard(out_dir="results/local", local="results/local")  # with my own runs
    """
    budgets = check_budgets(budgets)
    out_dir = Path(out_dir)
    folders = [Path(runs)]
    if local is not None:
        if out_dir.resolve() in (Path(runs).resolve().parent, DEFAULT_OUT.resolve()):
            raise InputError(f"tables with local runs go to their own folder, never over the committed tables in "
                             f"{out_dir}; pass another --out (default with --include-local: {DEFAULT_LOCAL})")
        folders.append(Path(local))
    folders = [f for f in folders if f.is_dir()]
    measured = [r for f in folders for r in read_runs(f)]
    board = build(read_published(published) + measured)
    frontier_tables, points = _frontier_tables(measured, budgets, mini=False)
    tables = [(BOARD, board)] + frontier_tables
    plots = [("png", "pareto.png", lambda path: plot_pareto(board, path)),
             ("frontier_png", f"{FRONTIER_TABLE.stem}.png",
              lambda path: plot_frontier(points, path, "nfebench: measured quality against measured latency"))]
    mini_rows = [r for f in folders for r in read_runs(f, mini=True)]
    if mini_rows:
        mini = build_mini(mini_rows, {k: v for f in folders for k, v in read_manifests(f).items()})
        mini_frontier, mini_points = _frontier_tables(mini_rows, budgets, mini=True)
        tables += [(MINI_TABLE, mini), (MINI_SPEEDUP_TABLE, build_mini_speedups(mini_rows, mini))] + mini_frontier
        plots.append(("mini_frontier_png", f"{MINI_FRONTIER_TABLE.stem}.png",
                      lambda path: plot_frontier(mini_points, path, "nfebench mini track: quality against latency")))
    paths: dict[str, Path] = {}
    for table, entries in tables:
        paths.update(table.write(entries, out_dir))
    if plot:
        for key, name, draw in plots:
            paths[key] = out_dir / name
            draw(paths[key])
    return paths
