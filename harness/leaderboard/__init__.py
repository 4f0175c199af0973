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
- ``pareto.png``: FID against generator ms per image, log axis (`plot`).

The package, one job a module, each holding the rules it applies:

- `rows`: reading published rows, run files and track manifests; numeric cells as canonical
  text; which rows count (status ``ok``, a value; oom/error rows stay in the run files);
- `choice`: one row where a setting was measured more than once (never by date), and ranks
  that share a rank where the 95% intervals overlap;
- `board`, `mini`: the tables' rows; `render`: a `Table` prints its rows as CSV (every
  column) and Markdown;
- `plot`: the Pareto plot.

A new table is a builder that returns rows and a `Table` for them, added to the list
`write_leaderboard` writes. Bytes of the tables depend only on the inputs: rows sorted,
floats to fixed decimals, no timestamps. The PNG is not covered by this promise (its pixels
depend on the matplotlib version and fonts).
"""

from __future__ import annotations

from pathlib import Path

from adapters.api.errors import InputError
from harness.leaderboard.board import BOARD, LEADERBOARD_COLUMNS, build
from harness.leaderboard.choice import (
    reference_like,
    relative_width,
    resolved_below,
    resolved_ranks,
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
from harness.leaderboard.plot import pareto_front, pareto_points, plot_pareto
from harness.leaderboard.render import Table
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
    "BOARD", "DEFAULT_LOCAL", "DEFAULT_OUT", "DEFAULT_PUBLISHED", "DEFAULT_RUNS", "EVIDENCE", "EXACT", "FASTEST",
    "LEADERBOARD_COLUMNS", "MINI_COLUMNS", "MINI_SETTING", "MINI_SPEEDUP_COLUMNS", "MINI_SPEEDUP_TABLE", "MINI_TABLE",
    "QUALITY_KEY", "SETTING", "Table", "build", "build_mini", "build_mini_speedups", "is_mini", "is_random_weights",
    "options_of", "pareto_front", "pareto_points", "plot_pareto", "read_manifests", "read_published", "read_runs",
    "records", "reference_like", "relative_width", "resolved_below", "resolved_ranks", "text", "to_csv",
    "to_markdown", "track_run", "write_leaderboard",
]

to_csv = BOARD.to_csv  # the main board as CSV text (the old module's name)
to_markdown = BOARD.to_markdown  # ... and as Markdown


def write_leaderboard(published: str | Path = DEFAULT_PUBLISHED, runs: str | Path = DEFAULT_RUNS,
                      out_dir: str | Path = DEFAULT_OUT, plot: bool = True,
                      local: str | Path | None = None) -> dict[str, Path]:
    """Regenerate ``leaderboard.csv``, ``leaderboard.md``, the mini track's tables (where its run
    files exist) and (if `plot`) ``pareto.png``.

    Args:
        published: the paper rows (`read_published` checks them).
        runs: folder searched recursively for run files (``*.csv``); may be empty or absent.
        out_dir: where the files are written, atomically.
        plot: draw the Pareto plot (needs matplotlib).
        local: a second folder of run files (a user's own, `DEFAULT_LOCAL`) read with `runs`;
            None reads none. `out_dir` must then not be `runs`'s parent folder, where the
            committed tables live.

    Returns:
        Output name -> path written: ``csv``, ``md``, ``mini_csv``, ``mini_md``,
        ``mini_speedup_csv``, ``mini_speedup_md``, ``png``.

    Example::

        paths = write_leaderboard("results/published.csv", "results/runs", "results")
        print(paths["csv"].read_text().splitlines()[0])  # fid_rank,model,family,...
        mine = write_leaderboard(out_dir="results/local", local="results/local")  # with my own runs
    """
    out_dir = Path(out_dir)
    folders = [Path(runs)]
    if local is not None:
        if out_dir.resolve() in (Path(runs).resolve().parent, DEFAULT_OUT.resolve()):
            raise InputError(f"tables with local runs go to their own folder, never over the committed tables in "
                             f"{out_dir}; pass another --out (default with --include-local: {DEFAULT_LOCAL})")
        folders.append(Path(local))
    folders = [f for f in folders if f.is_dir()]
    board = build(read_published(published) + [r for f in folders for r in read_runs(f)])
    tables = [(BOARD, board)]
    mini_rows = [r for f in folders for r in read_runs(f, mini=True)]
    if mini_rows:
        mini = build_mini(mini_rows, {k: v for f in folders for k, v in read_manifests(f).items()})
        tables += [(MINI_TABLE, mini), (MINI_SPEEDUP_TABLE, build_mini_speedups(mini_rows, mini))]
    paths: dict[str, Path] = {}
    for table, entries in tables:
        paths.update(table.write(entries, out_dir))
    if plot:
        paths["png"] = out_dir / "pareto.png"
        plot_pareto(board, paths["png"])
    return paths
