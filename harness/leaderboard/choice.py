"""Choice and ranks: one row per setting measured more than once, and ranks that never resolve
a difference the 95% intervals cannot.

Rules (each applied here and nowhere else):

- Choice, never by date: the narrowest 95% interval relative to its value first (a schema-1
  row without one counts ``value +- 2 x spread``, and a row with neither counts as infinitely
  wide), then the most samples ``n``, then the greater ``run_id``. For quality the most
  samples come first (a FID of more samples is a less biased one, not only a less noisy
  one), then the interval (`choose`).
- Resolution: with se = (ci_high - ci_low) / 3.92, a lies below b only when
  b - a > 1.96 sqrt(se_a^2 + se_b^2) (`resolved_below`). An estimate without an interval
  (paper rows, older runs) has se 0.
- Ranks compare only FIDs of equal N, reference and Inception network (`comparison_group`);
  a FID's rank is one more than the FIDs resolved below it, so unresolved ones share a rank,
  and among FIDs without intervals ties share the lower rank (`resolved_ranks`, `add_ranks`).
  The same resolution makes the frontier of quality against time (`harness.leaderboard.frontier`):
  a point is dominated only where `resolved_better` says so on an axis.
- A timing the quality gate vouches for is its own reference or verified (`reference_like`);
  only such a timing may stand beside a paper's FID.

Example::

    resolved_ranks({"a": (49.0, 45.1, 52.9), "b": (51.0, 47.2, 54.8), "c": (97.3, 90.0, 104.6)})
    # {'a': 1, 'b': 1, 'c': 3}
"""

from __future__ import annotations

import math
from typing import Iterable

from harness.leaderboard.rows import is_eager
from harness.results import REFERENCE, VERIFIED
from harness.timing.stats import interval_or_spread

# value, ci_low, ci_high: the bounds None without an interval.
Estimate = tuple[float, float | None, float | None]


def relative_width(r: dict) -> float:
    """Width of a row's 95% interval over its value (`interval_or_spread`: a schema-1 row's spread
    stands in); infinite with neither or a zero value."""
    found = interval_or_spread(r["value"], r["ci_low"], r["ci_high"], r["spread"])
    if found is None or r["value"] == 0:
        return math.inf
    return (found[1] - found[0]) / abs(r["value"])


def choose(rows: Iterable[dict], key_cols: tuple, by_n: bool) -> dict[tuple, dict]:
    """One row per key: the narrowest relative interval, then the most samples, then the greater run
    id; with `by_n` (quality) the most samples first. Never the file date.

    Args:
        rows: rows as `harness.leaderboard.rows.records` gives them.
        key_cols: the columns whose values make the key (a setting, plus the metric).
        by_n: samples before interval width (quality rows).

    Returns:
        key (the values of `key_cols`) -> the chosen row.
    """
    def precedence(r: dict) -> tuple:
        n = float(r["n"]) if r["n"] else 0.0
        width = relative_width(r)
        return ((n, -width) if by_n else (-width, n)) + (r["run_id"],)

    chosen: dict[tuple, dict] = {}
    for r in rows:
        k = tuple(r[c] for c in key_cols)
        if k not in chosen or precedence(r) > precedence(chosen[k]):
            chosen[k] = r
    return chosen


def _se(e: Estimate, z: float, side: str) -> float:
    """The standard error on one side of an interval: (ci_high - value) / z above, (value - ci_low)
    / z below. Medians of timings have skewed intervals (a slow outlier stretches the upper side
    only), so each comparison reads the side that faces the other value."""
    value, lo, hi = e
    if lo is None or hi is None:
        return 0.0
    return (hi - value if side == "above" else value - lo) / z


def resolved_below(a: Estimate, b: Estimate, z: float = 1.96) -> bool:
    """True when a's value lies below b's by more than the intervals leave open:
    b - a > z sqrt(se_a^2 + se_b^2), with a's standard error from the upper side of its interval
    and b's from the lower (`_se`; for a symmetric interval either is (ci_high - ci_low) / (2 z)).

    >>> resolved_below((49.0, 45.1, 52.9), (97.3, 90.0, 104.6)), resolved_below((49.0, 45.1, 52.9), (51.0, 47.2, 54.8))
    (True, False)
    >>> resolved_below((2.5, 2.3, 3.0), (34.2, 23.6, 806.3))  # a slow tail above b does not hide the gap
    True
    """
    return a[0] < b[0] and b[0] - a[0] > z * math.sqrt(_se(a, z, "above") ** 2 + _se(b, z, "below") ** 2)


def _negated(e: Estimate) -> Estimate:
    value, lo, hi = e
    return (-value, None if hi is None else -hi, None if lo is None else -lo)


def resolved_better(a: Estimate, b: Estimate, higher_is_better: bool = False, z: float = 1.96) -> bool:
    """True when a is better than b beyond what the intervals leave open: `resolved_below` for a
    lower-is-better quantity (FID, KID, ms per image), above for a higher-is-better one (IS,
    precision, recall).

    >>> resolved_better((300.0, 290.0, 310.0), (250.0, 240.0, 260.0), higher_is_better=True)
    True
    """
    return resolved_below(_negated(a), _negated(b), z) if higher_is_better else resolved_below(a, b, z)


def resolved_ranks(values: dict, z: float = 1.96, higher_is_better: bool = False) -> dict:
    """key -> rank, from key -> (value, ci_low, ci_high) (bounds None without an interval): one more
    than the number of values resolved better than it (`resolved_better`; by default lower is better).

    >>> resolved_ranks({"a": (49.0, 45.1, 52.9), "b": (51.0, 47.2, 54.8), "c": (97.3, 90.0, 104.6)})
    {'a': 1, 'b': 1, 'c': 3}
    """
    return {k: 1 + sum(1 for j, w in values.items() if j != k and resolved_better(w, v, higher_is_better, z))
            for k, v in values.items()}


def comparison_group(e: dict) -> tuple:
    """The FIDs an entry's FID compares with: equal N, reference (mode and file) and network."""
    return (e["quality_n"] or 0, e["fid_reference"] or "", e.get("network") or "")


def add_ranks(board: dict, key: tuple) -> None:
    """Set `fid_rank` over the distinct `key`s with a FID, within each `comparison_group`, by `resolved_ranks`."""
    groups: dict[tuple, dict] = {}
    for e in board.values():
        if e["fid"] is not None:
            groups.setdefault(comparison_group(e), {})[tuple(e[c] for c in key)] = (e["fid"], e["fid_ci_low"],
                                                                                    e["fid_ci_high"])
    ranks = {(g, k): r for g, values in groups.items() for k, r in resolved_ranks(values).items()}
    for e in board.values():
        if e["fid"] is not None:
            e["fid_rank"] = ranks[(comparison_group(e), tuple(e[c] for c in key))]


def reference_like(e: dict) -> bool:
    """A timing the quality gate vouches for: its own reference or verified; a row older than the gate
    counts as its reference when it ran float32, eager, with default options."""
    if e["quality"]:
        return e["quality"] in (REFERENCE, VERIFIED)
    return e["options"] == "" and e["dtype"] == "float32" and is_eager(e["compiled"])
