"""Reading the frontier two ways: the best setting within a latency budget, and each model's
optimal setting per metric with what it costs in the others (issue 21).

- ``leaderboard-budgets`` (`build_budgets`): for each budget (``--budgets``, ms per image,
  `parse_budgets`) and each frontier group (`harness.leaderboard.frontier.FRONTIER_GROUP`), the
  best quality among the points whose median ms per image is at most the budget (a point
  exactly at the budget fits). The settings whose quality the intervals do not resolve from
  the best's (`choice.resolved_better`) share its row (`shared`). A budget below every point
  says so in its row, naming the fastest point.
- ``leaderboard-optima`` (`build_optima`): per model and place of timing, its FID-, KID- and
  IS-optimal settings (the best value; those not resolved from it in `shared`), each with its
  FID, KID, IS, precision and recall and its ms per image, so the cost of optimising one
  metric in the others reads across a row.

Ties on value go to the faster point, then the setting's name, so the tables are stable.

Example::

    points = build_frontier(read_runs(mini=True))
    BUDGETS_TABLE.to_markdown(build_budgets(points, parse_budgets("1,10,100")))
    OPTIMA_TABLE.to_markdown(build_optima(points))
"""

from __future__ import annotations

import math
from typing import Iterable

from adapters.api.errors import InputError
from harness.leaderboard.choice import resolved_better
from harness.leaderboard.frontier import (
    FRONTIER_GROUP,
    FRONTIER_METRICS,
    HIGHER_IS_BETTER,
    QUALITY_DECIMALS,
    QUALITY_GROUP,
    TIMED_ON,
    group_sort_key,
    groups,
    measured_against,
    quality_text,
    timed_on,
)
from harness.leaderboard.render import Table
from harness.results import FID, IS, KID

DEFAULT_BUDGETS = (1.0, 10.0, 100.0)  # ms per image
OPTIMISED = (FID, KID, IS)  # the metrics a model's optimal settings are chosen by


def check_budgets(budgets: Iterable) -> tuple[float, ...]:
    """The budgets as floats, each a positive finite number of ms per image, else an InputError."""
    out = []
    for b in budgets:
        try:
            v = float(b)
        except (TypeError, ValueError):
            v = math.nan
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"--budgets: {b!r} is not a positive number of ms per image; give e.g. --budgets 1,10,100")
        out.append(v)
    if not out:
        raise InputError("--budgets needs at least one budget in ms per image, e.g. --budgets 1,10,100")
    return tuple(out)


def parse_budgets(text: str) -> tuple[float, ...]:
    """``"1,10,100"`` -> (1.0, 10.0, 100.0); an empty item, a word, zero, a negative or an
    infinite budget is an InputError.

    >>> parse_budgets("0.5, 10")
    (0.5, 10.0)
    """
    return check_budgets(t.strip() for t in str(text).split(","))


def _oriented(p: dict) -> float:
    """The point's quality as a number where less is better."""
    return -p["value"] if HIGHER_IS_BETTER[p["metric"]] else p["value"]


def _best(members: list[dict]) -> tuple[dict, list[dict]]:
    """The best quality (ties: faster, then by name) and the others not resolved worse than it, fastest first."""
    best = min(members, key=lambda p: (_oriented(p), p["ms_per_image"], p["setting"]))
    higher = HIGHER_IS_BETTER[best["metric"]]
    q = (best["value"], best["value_ci_low"], best["value_ci_high"])
    shared = [p for p in members if p is not best
              and not resolved_better(q, (p["value"], p["value_ci_low"], p["value_ci_high"]), higher)]
    return best, sorted(shared, key=lambda p: (p["ms_per_image"], p["setting"]))  # the cheapest first


BUDGET_COLUMNS = ("budget_ms", "metric", "better") + QUALITY_GROUP + TIMED_ON + (
    "model", "setting", "options", "dtype", "nfe", "value", "value_ci_low", "value_ci_high", "ms_per_image",
    "ms_per_image_ci_low", "ms_per_image_ci_high", "fits", "shared", "note")
_POINT_CELLS = ("model", "setting", "options", "dtype", "nfe", "value", "value_ci_low", "value_ci_high",
                "ms_per_image", "ms_per_image_ci_low", "ms_per_image_ci_high")


def build_budgets(points: list[dict], budgets: Iterable[float] = DEFAULT_BUDGETS) -> list[dict]:
    """One row per frontier group and budget, with `BUDGET_COLUMNS`.

    Args:
        points: `build_frontier`'s points.
        budgets: ms per image, each positive (`check_budgets`).

    Returns:
        Rows in the frontier's group order, budgets ascending; `fits` counts the points within
        the budget, `shared` names (``; ``) the settings the intervals do not resolve from the
        best, `note` says when nothing fits.
    """
    budgets = sorted(set(check_budgets(budgets)))
    out = []
    for members in groups(points).values():
        first = members[0]
        for budget in budgets:
            e = {c: None for c in BUDGET_COLUMNS}
            e.update({c: first[c] for c in FRONTIER_GROUP}, budget_ms=budget, better=first["better"])
            fits = [p for p in members if p["ms_per_image"] <= budget]
            e["fits"] = len(fits)
            if fits:
                best, shared = _best(fits)
                e.update({c: best[c] for c in _POINT_CELLS}, shared="; ".join(p["setting"] for p in shared))
            else:
                fastest = min(members, key=lambda p: (p["ms_per_image"], p["setting"]))
                e["note"] = (f"nothing within {budget:g} ms per image: the fastest is {fastest['setting']} at "
                             f"{fastest['ms_per_image']:.3f} ms")
            out.append(e)
    return out


def _options_or_defaults(p: dict) -> str:
    """A setting's name within its model's row: its options (and dtype), or ``defaults``."""
    name = p["setting"].removeprefix(p["model"])
    return name.strip() or "defaults"


OPTIMA_COLUMNS = ("model", "family", "params", "optimises", "setting", "options", "dtype", "nfe", "shared") + tuple(
    f"{m}{suffix}" for m in FRONTIER_METRICS for suffix in ("", "_ci_low", "_ci_high")) + (
    "ms_per_image", "ms_per_image_ci_low", "ms_per_image_ci_high") + TIMED_ON + QUALITY_GROUP


def build_optima(points: list[dict]) -> list[dict]:
    """Per model and place (`QUALITY_GROUP` + `TIMED_ON`), one row per metric of `OPTIMISED` it has
    points of: the optimal setting, the settings not resolved from it (`shared`), and that
    setting's value in every metric of `FRONTIER_METRICS` with its ms per image
    (`OPTIMA_COLUMNS`). Rows by model, place, then FID, KID, IS."""
    out = []
    place = QUALITY_GROUP + TIMED_ON
    by_model = groups(points, ("model",) + place)
    for key in sorted(by_model, key=lambda k: (k[0], group_sort_key(by_model[k][0]))):
        members = by_model[key]
        cells = {(p["setting"], p["metric"]): p for p in members}
        for metric in OPTIMISED:
            scored = [p for p in members if p["metric"] == metric]
            if not scored:
                continue
            best, shared = _best(scored)
            e = {c: best[c] for c in ("model", "family", "params", "setting", "options", "dtype", "nfe")}
            e.update({c: best[c] for c in place}, optimises=metric,
                     shared="; ".join(_options_or_defaults(p) for p in shared),
                     ms_per_image=best["ms_per_image"], ms_per_image_ci_low=best["ms_per_image_ci_low"],
                     ms_per_image_ci_high=best["ms_per_image_ci_high"])
            for m in FRONTIER_METRICS:
                p = cells.get((best["setting"], m))
                e[m], e[f"{m}_ci_low"], e[f"{m}_ci_high"] = (
                    (p["value"], p["value_ci_low"], p["value_ci_high"]) if p else (None, None, None))
            out.append(e)
    return out


def _quality_of(metric: str):
    def cell(t: Table, e: dict) -> str:
        return quality_text(metric, e[metric], e[f"{metric}_ci_low"], e[f"{metric}_ci_high"], named=False)
    return cell


def _best_cell(t: Table, e: dict) -> str:
    return quality_text(e["metric"], e["value"], e["value_ci_low"], e["value_ci_high"])


_MS = {"ms_per_image": 3, "ms_per_image_ci_low": 3, "ms_per_image_ci_high": 3}
_Q = {f"{m}{s}": QUALITY_DECIMALS for m in ("value",) + FRONTIER_METRICS for s in ("", "_ci_low", "_ci_high")}
BUDGETS_TABLE = Table(
    "budgets", BUDGET_COLUMNS, {**_MS, **_Q},
    intervals={"ms_per_image": False},
    markdown_columns=("budget_ms", "setting", "nfe", "quality [95%]", "ms_per_image", "shared", "timed on",
                      "measured against", "note"),
    cells={"quality [95%]": _best_cell, "timed on": timed_on, "measured against": measured_against},
    empty="No budgets to fill: the frontier has no points.",
)
OPTIMA_TABLE = Table(
    "optima", OPTIMA_COLUMNS, {**_MS, **_Q},
    intervals={"ms_per_image": False},
    markdown_columns=("model", "optimises", "setting", "shared", "fid [95%]", "kid [95%]", "is [95%]",
                      "ms_per_image", "timed on", "measured against"),
    cells={"fid [95%]": _quality_of(FID), "kid [95%]": _quality_of(KID), "is [95%]": _quality_of(IS),
           "timed on": timed_on, "measured against": measured_against},
    empty="No optima: the frontier has no points.",
)
