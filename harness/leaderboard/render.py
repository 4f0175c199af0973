"""Tables as text: a `Table` says how one table of the leaderboard prints, as CSV (every
column) and as Markdown (each interval beside its value: ``49.04 [45.10, 52.90]``).

Bytes depend only on the rows: floats print with fixed decimals per column, other numbers
canonically (`harness.leaderboard.rows.text`), ``\\n`` line ends, no timestamps. A table a
person reads names its Markdown columns (`Table.markdown_columns`, at most `MAX_MARKDOWN_COLUMNS`):
CSV columns, or cells of their own that join several (`Table.cells`: ``336.181 on cpu, b1``);
its CSV keeps every column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from harness.leaderboard.rows import text
from harness.results import atomic_write

# Integer columns: right-aligned in Markdown, like the columns with decimals.
INTEGER_COLUMNS = frozenset({"fid_rank", "quality_rank", "params", "nfe", "batch_size", "quality_n", "train_steps", "half_steps",
                             "iterations_max", "iterations_max_batched"})
# A Markdown table a person reads shows at most this many columns (issue 21); the CSV keeps every one.
MAX_MARKDOWN_COLUMNS = 10


def joined(*parts, sep: str = "; ") -> str:
    """The non-empty parts as one cell: ``joined("0.290", "", "tpu")`` is ``"0.290; tpu"``."""
    return sep.join(str(p) for p in parts if p not in (None, ""))


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
        markdown_columns: the columns the Markdown shows, CSV columns or keys of `cells`; empty:
            every column but the interval bounds of `intervals`.
        cells: Markdown-only columns, header -> the cell's text from (this table, a row); they
            join CSV columns into one readable cell (``0.290; decoded 1.590; tpu``).
        empty: the sentence the Markdown says under its header when there are no rows.

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
    cells: Mapping[str, Callable[["Table", dict], str]] = field(default_factory=dict)
    empty: str = ""

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
        """``49.04 [45.10, 52.90]``; without an interval the value alone, or ``2.39 (no interval)``
        where `intervals` says so."""
        value = self.cell(col, e[col])
        low, high = e.get(f"{col}_ci_low"), e.get(f"{col}_ci_high")
        if not value:
            return ""
        if low is None or high is None:
            return f"{value} (no interval)" if self.intervals.get(col) else value
        return f"{value} [{self.cell(col, low)}, {self.cell(col, high)}]"

    def to_csv(self, rows: list[dict]) -> str:
        """The rows as CSV text, every column."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for e in rows:
            w.writerow([self.cell(c, e[c]) for c in self.columns])
        return buf.getvalue()

    def markdown_cell(self, col: str, e: dict) -> str:
        """One Markdown cell: a joined cell of `cells`, a value with its interval, or the CSV cell."""
        if col in self.cells:
            return self.cells[col](self, e)
        return self.with_interval(col, e) if col in self.intervals else self.cell(col, e[col])

    def to_markdown(self, rows: list[dict]) -> str:
        """The rows as a Markdown table of the `shown` columns, numbers right-aligned; `empty` under
        the header when there are none."""
        shown = self.shown()
        numeric = set(self.decimals) | INTEGER_COLUMNS
        lines = ["| " + " | ".join(shown) + " |",
                 "|" + "|".join("---:" if c in numeric else "---" for c in shown) + "|"]
        for e in rows:
            lines.append("| " + " | ".join(self.markdown_cell(c, e).replace("|", "\\|") for c in shown) + " |")
        if not rows and self.empty:
            lines += ["", self.empty]
        return "\n".join(lines) + "\n"
