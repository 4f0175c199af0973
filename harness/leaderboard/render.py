"""Tables as text: a `Table` says how one table of the leaderboard prints, as CSV (every
column) and as Markdown (each interval beside its value: ``49.04 [45.10, 52.90]``).

Bytes depend only on the rows: floats print with fixed decimals per column, other numbers
canonically (`harness.leaderboard.rows.text`), ``\\n`` line ends, no timestamps. A table a
person reads names its Markdown columns (`Table.markdown_columns`, at most about ten); its
CSV keeps every column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from harness.leaderboard.rows import text
from harness.results import atomic_write

# Integer columns: right-aligned in Markdown, like the columns with decimals.
INTEGER_COLUMNS = frozenset({"fid_rank", "params", "nfe", "batch_size", "quality_n", "train_steps", "half_steps",
                             "iterations_max", "iterations_max_batched"})


@dataclass(frozen=True)
class Table:
    """How one table prints, and the files it goes to.

    Args:
        name: its key in `write_leaderboard`'s answer: "" for the main board (keys ``csv`` and
            ``md``, files ``leaderboard.{csv,md}``), ``mini_speedup`` for keys ``mini_speedup_csv``
            and ``mini_speedup_md``, files ``leaderboard-mini-speedup.{csv,md}``.
        columns: every column, in order; the CSV holds them all.
        decimals: fixed decimals of the float columns.
        intervals: columns shown with their ``<col>_ci_low`` and ``<col>_ci_high`` in one Markdown
            cell; True where a missing interval is said (``2.39 (no interval)``).
        markdown_columns: the columns the Markdown shows; empty: every column but the interval
            bounds of `intervals`.

    Example::

        t = Table("demo", ("model", "fid", "fid_ci_low", "fid_ci_high"),
                  {"fid": 2, "fid_ci_low": 2, "fid_ci_high": 2}, {"fid": True})
        t.to_markdown([{"model": "a", "fid": 49.04, "fid_ci_low": 45.1, "fid_ci_high": 52.9}])
        # '| model | fid |\\n|---|---:|\\n| a | 49.04 [45.10, 52.90] |\\n'
    """

    name: str
    columns: tuple[str, ...]
    decimals: Mapping[str, int] = field(default_factory=dict)
    intervals: Mapping[str, bool] = field(default_factory=dict)
    markdown_columns: tuple[str, ...] = ()

    @property
    def stem(self) -> str:
        """The file name without suffix: ``leaderboard`` or ``leaderboard-<name>``."""
        return "leaderboard" + (f"-{self.name.replace('_', '-')}" if self.name else "")

    def write(self, rows: list[dict], out_dir: str | Path) -> dict[str, Path]:
        """Write the rows' CSV and Markdown into `out_dir`, atomically.

        Returns:
            {"<name>_csv": path, "<name>_md": path} (``csv`` and ``md`` for the main board).
        """
        prefix = f"{self.name}_" if self.name else ""
        stem = Path(out_dir) / self.stem
        paths = {f"{prefix}csv": stem.with_suffix(".csv"), f"{prefix}md": stem.with_suffix(".md")}
        atomic_write(paths[f"{prefix}csv"], self.to_csv(rows))
        atomic_write(paths[f"{prefix}md"], self.to_markdown(rows))
        return paths

    def shown(self) -> tuple[str, ...]:
        """The Markdown's columns."""
        bounds = {f"{c}_ci_{side}" for c in self.intervals for side in ("low", "high")}
        return self.markdown_columns or tuple(c for c in self.columns if c not in bounds)

    def cell(self, col: str, v) -> str:
        """One value as text: fixed decimals where the column has them, else canonical; blank for None."""
        if v is None or v == "":
            return ""
        if col in self.decimals:
            return f"{v:.{self.decimals[col]}f}"
        return text(v)

    def with_interval(self, col: str, e: dict) -> str:
        """``49.04 [45.10, 52.90]``; without an interval the value alone, or ``2.39 (no interval)``."""
        value = self.cell(col, e[col])
        low, high = e[f"{col}_ci_low"], e[f"{col}_ci_high"]
        if not value:
            return ""
        if low is None or high is None:
            return f"{value} (no interval)" if self.intervals[col] else value
        return f"{value} [{self.cell(col, low)}, {self.cell(col, high)}]"

    def to_csv(self, rows: list[dict]) -> str:
        """The rows as CSV text, every column."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for e in rows:
            w.writerow([self.cell(c, e[c]) for c in self.columns])
        return buf.getvalue()

    def to_markdown(self, rows: list[dict]) -> str:
        """The rows as a Markdown table of the `shown` columns, numbers right-aligned."""
        shown = self.shown()
        numeric = set(self.decimals) | INTEGER_COLUMNS
        lines = ["| " + " | ".join(shown) + " |",
                 "|" + "|".join("---:" if c in numeric else "---" for c in shown) + "|"]
        for e in rows:
            cells = [(self.with_interval(c, e) if c in self.intervals else self.cell(c, e[c])).replace("|", "\\|")
                     for c in shown]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
