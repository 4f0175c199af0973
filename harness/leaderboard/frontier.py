"""The frontier of quality against measured latency (issue 21): per quality metric and where it
was timed, the (model, setting) points that no other point beats once the intervals are read.

Points (`build_frontier`). A point is a setting (model, sampler options, dtype, backend,
compiled mode) with a measured quality and a measured time: its quality rows (`nfebench sweep`
and `nfebench eval` rows, and the bench quality gate's FID rows, each naming its options in
``config.options``) joined with its ``ms_per_image`` rows on the setting and the generator's
weights (`generator_weights`). Rules, each applied here and nowhere else:

- measured rows only, and never quality measured on random weights: they say nothing about
  quality, so such a setting is never a point;
- quality compares only within one `QUALITY_GROUP` of the quality rows (N, mode and reference
  batch, reference N, feature network, seed): never two N or two references on one frontier;
- a frontier is per metric, per quality group and per `TIMED_ON` (device, device name, batch
  size, decode); a model without a decoder (its weights name none) has decode on = off, so its
  timing rows of either kind are one (`timed_decode`);
- a setting measured more than once gives one row (`choice.choose`: the most samples for
  quality, the narrowest interval for time); the sweep's ``speedup`` over the model's baseline
  setting (``config.basis`` "sweep baseline") stands beside its time.

Dominance (`dominated_by`): A dominates B when A is resolved better than B
(`choice.resolved_better`, the rule the ranks use) in time or in quality and not resolved worse
in the other. Points whose intervals overlap on both axes therefore share the frontier; a point
without an interval compares by its value. The frontier is the points no other point
dominates. Resolution is not transitive, so in a contrived set a point may be dominated only
by points that are dominated themselves; it is still off the frontier.

Example::

    points = build_frontier(read_runs(mini=True))
    [p["setting"] for p in points if p["metric"] == "fid" and p["frontier"] == "yes"]
    FRONTIER_TABLE.to_markdown(points)  # what leaderboard-mini-frontier.md holds
"""

from __future__ import annotations

from typing import Hashable, Mapping

from harness.leaderboard.choice import Estimate, choose, resolved_better, resolved_ranks
from harness.leaderboard.render import Table, joined
from harness.leaderboard.rows import (
    config_of,
    finite,
    is_eager,
    is_random_weights,
    reference_of,
    setting_name,
    sort_number,
    usable,
)
from harness.results import FID, IS, KID, MS_PER_IMAGE, PRECISION, RECALL, SPEEDUP
from harness.settings import options_text

# metric -> True where higher is better; the frontier's metrics, in the order its tables list them
HIGHER_IS_BETTER = {FID: False, KID: False, IS: True, PRECISION: True, RECALL: True}
FRONTIER_METRICS = tuple(HIGHER_IS_BETTER)
# what makes a setting's samples and its time: its quality rows and timing rows join on it
POINT_SETTING = ("model", "options", "dtype", "backend", "compiled", "generator_weights")
# where a time was measured
TIMED_ON = ("device", "device_name", "batch_size", "decode")
# the quality rows that compare with each other
QUALITY_GROUP = ("quality_n", "reference", "reference_n", "network", "seed")
# one frontier: a metric, its comparable quality rows, one place of timing
FRONTIER_GROUP = ("metric",) + QUALITY_GROUP + TIMED_ON
SWEEP_BASELINE = "sweep baseline"  # config.basis of a sweep's speedup rows (the sweep spec)

FRONTIER_COLUMNS = (
    "metric", "better", "frontier", "quality_rank", "dominated_by", "model", "family", "params", "nfe", "setting",
    "options", "dtype", "backend", "compiled", "value", "value_ci_low", "value_ci_high", "ms_per_image",
    "ms_per_image_ci_low", "ms_per_image_ci_high", "speedup", "speedup_ci_low", "speedup_ci_high", "baseline",
    "quality", "device", "device_name", "batch_size", "decode", "quality_n", "reference", "reference_n", "network",
    "seed", "weights", "citation",
)
QUALITY_DECIMALS = 4  # FID, KID, IS, precision and recall alike: a KID of 0.0123 keeps its digits
NO_POINTS = ("No points: no measured quality with trained weights (rows of `nfebench sweep` or `nfebench eval`, or "
             "the bench quality gate's FIDs) joins a measured time of the same setting and weights.")


def generator_weights(weights: str) -> str:
    """The generator's part of a row's weights: ``sha256:ab`` of ``sha256:ab+vae:sha256:cd``.
    A setting's timing rows (decode off names no decoder) join its quality rows on it."""
    return str(weights).split("+vae:")[0]


def timed_decode(r: dict) -> str:
    """A timing row's decode: ``on`` only where a decoder ran (its weights name one); for a model
    without a decoder (pixel space) an image's end-to-end time is the generator's."""
    return "on" if r["decode"] == "on" and "+vae:" in str(r["weights"]) else "off"


def _compiled(value: str) -> str:
    """The compiled cell as one word per mode: eager rows (``False``, ``none``, blank) are ``False``."""
    return "False" if is_eager(value) else str(value)


def setting_label(model: str, options: str, dtype: str, backend: str, compiled: str) -> str:
    """A point's name: its setting's (`rows.setting_name`, options as text) plus what differs from
    float32 eager torch: ``biflow-mini (bfloat16)``, ``rf-mini[num_steps=4]``."""
    extra = [dtype if dtype not in ("", "float32") else "", backend if backend not in ("", "torch") else "",
             "compiled" if compiled != "False" else ""]
    tail = joined(*extra, sep=", ")
    return setting_name(model, options) + (f" ({tail})" if tail else "")


def _setting_cells(r: dict) -> dict:
    """A row's cells of `POINT_SETTING` (options as text, compiled as one word per mode)."""
    return {"model": r["model"], "options": r["options"], "dtype": r["dtype"], "backend": r["backend"],
            "compiled": _compiled(r["compiled"]), "generator_weights": generator_weights(r["weights"])}


def _estimate(e: dict, col: str) -> Estimate:
    return (e[col], e[f"{col}_ci_low"], e[f"{col}_ci_high"])


def dominated_by(points: Mapping[Hashable, tuple[Estimate, Estimate]], higher_is_better: bool = False,
                 z: float = 1.96) -> dict[Hashable, list[Hashable]]:
    """key -> the keys of the points that dominate it (empty: it is on the frontier).

    Args:
        points: key -> (time, quality), each (value, ci_low, ci_high), bounds None without an
            interval; lower time is better.
        higher_is_better: of the quality (IS, precision, recall); FID and KID are lower.
        z: the normal quantile of the intervals (1.96: 95%).

    Returns:
        key -> keys of the points dominating it, in the order of `points`. A dominates B when A
        is resolved better (`choice.resolved_better`) in time or quality and not resolved worse
        in the other.

    Example::

        dominated_by({"fast": ((1.0, 0.9, 1.1), (52.0, 49.0, 55.0)),
                      "slow": ((10.0, 9.0, 11.0), (49.0, 46.0, 52.0)),
                      "bad": ((1.2, 1.0, 1.4), (90.0, 87.0, 93.0))})
        # {'fast': [], 'slow': ['fast'], 'bad': ['fast']}: fast is resolved faster than slow and
        # not resolved worse; bad overlaps fast in time and is resolved worse in quality
    """
    def dominates(a: tuple[Estimate, Estimate], b: tuple[Estimate, Estimate]) -> bool:
        faster, slower = resolved_better(a[0], b[0], False, z), resolved_better(b[0], a[0], False, z)
        better = resolved_better(a[1], b[1], higher_is_better, z)
        worse = resolved_better(b[1], a[1], higher_is_better, z)
        return (faster and not worse) or (better and not slower)

    return {k: [j for j, a in points.items() if j != k and dominates(a, b)] for k, b in points.items()}


def _quality_rows(rows: list[dict]) -> dict[tuple, dict]:
    """(setting, quality group, metric) -> the chosen measured quality row with trained weights."""
    found = []
    for r in rows:
        if r["metric"] in HIGHER_IS_BETTER and r["source"] == "measured" and not is_random_weights(r["weights"]):
            config = config_of(r)
            found.append(dict(r, **_setting_cells(r), quality_n=r["n"], reference=reference_of(r),
                              reference_n=str(config.get("reference_n", "")), network=str(config.get("network", ""))))
    return choose(found, POINT_SETTING + QUALITY_GROUP + ("metric",), by_n=True)


def _timed_rows(rows: list[dict], metric: str) -> dict[tuple, dict]:
    """(setting, place of timing) -> the chosen measured row of `metric` at one batch size."""
    found = [dict(r, **_setting_cells(r), decode=timed_decode(r)) for r in rows
             if r["metric"] == metric and r["source"] == "measured" and r["batch_size"] and r["decode"] in ("on", "off")
             and (metric != SPEEDUP or config_of(r).get("basis") == SWEEP_BASELINE)]
    return choose(found, POINT_SETTING + TIMED_ON, by_n=False)


def build_frontier(rows: list[dict]) -> list[dict]:
    """Every point of every frontier, with `FRONTIER_COLUMNS`: `frontier` ``yes`` or ``no``,
    `dominated_by` (the settings that dominate it), `quality_rank` (one more than the points of
    its frontier resolved better in quality: overlapping ones share a rank).

    Args:
        rows: measured rows as `read_runs` gives them (sweep, eval and bench run files); paper
            rows and rows on random weights are left out.

    Returns:
        Points sorted by metric (`FRONTIER_METRICS`), frontier group, then ms per image and setting.
    """
    rows = usable(rows)
    scores = _quality_rows(rows)
    times = _timed_rows(rows, MS_PER_IMAGE)
    ratios = _timed_rows(rows, SPEEDUP)
    width = len(POINT_SETTING)
    by_setting: dict[tuple, list[tuple]] = {}
    for k in times:
        by_setting.setdefault(k[:width], []).append(k)
    points = []
    for qk, q in scores.items():
        for tk in by_setting.get(qk[:width], ()):
            t, s = times[tk], ratios.get(tk)
            cs = config_of(s) if s else {}
            points.append({
                "metric": q["metric"], "better": "higher" if HIGHER_IS_BETTER[q["metric"]] else "lower",
                "model": q["model"], "family": q["family"] or t["family"], "params": q["params"] or t["params"],
                "nfe": q["nfe"] or t["nfe"],
                "setting": setting_label(q["model"], q["options"], q["dtype"], q["backend"], q["compiled"]),
                **{c: q[c] for c in ("options", "dtype", "backend", "compiled") + QUALITY_GROUP},
                "value": q["value"], "value_ci_low": finite(q["ci_low"]), "value_ci_high": finite(q["ci_high"]),
                "ms_per_image": t["value"], "ms_per_image_ci_low": finite(t["ci_low"]),
                "ms_per_image_ci_high": finite(t["ci_high"]),
                "speedup": s["value"] if s else None, "speedup_ci_low": finite(s["ci_low"]) if s else None,
                "speedup_ci_high": finite(s["ci_high"]) if s else None,
                "baseline": options_text(cs.get("teacher_options") or {}) if s else "",
                "quality": t.get("quality") or q.get("quality") or "",
                **{c: t[c] for c in TIMED_ON},
                "weights": q["weights"],
                "citation": "; ".join(sorted({f"run {r['run_id']}" for r in (q, t, s) if r})),
            })
    _mark_frontiers(points)
    order = {m: i for i, m in enumerate(FRONTIER_METRICS)}
    return sorted(points, key=lambda p: (order[p["metric"]], group_sort_key(p), p["ms_per_image"], p["setting"]))


def group_sort_key(p: dict) -> tuple:
    """A frontier group in reading order: the most samples first, batch sizes by number."""
    return (-sort_number(p["quality_n"]), p["reference"], p["reference_n"], p["network"], p["seed"], p["device"],
            p["device_name"], sort_number(p["batch_size"]), p["batch_size"], p["decode"])


def groups(points: list[dict], key: tuple[str, ...] = FRONTIER_GROUP) -> dict[tuple, list[dict]]:
    """The points by the values of `key` (by default one frontier each), in first-seen order."""
    out: dict[tuple, list[dict]] = {}
    for p in points:
        out.setdefault(tuple(p[c] for c in key), []).append(p)
    return out


def _mark_frontiers(points: list[dict]) -> None:
    """Set `frontier`, `dominated_by` and `quality_rank` of each point within its frontier group."""
    for members in groups(points).values():
        higher = HIGHER_IS_BETTER[members[0]["metric"]]
        keyed = {i: (_estimate(p, "ms_per_image"), _estimate(p, "value")) for i, p in enumerate(members)}
        beaten = dominated_by(keyed, higher)
        ranks = resolved_ranks({i: e[1] for i, e in keyed.items()}, higher_is_better=higher)
        for i, p in enumerate(members):
            p["frontier"] = "no" if beaten[i] else "yes"
            p["dominated_by"] = "; ".join(sorted({members[j]["setting"] for j in beaten[i]}))
            p["quality_rank"] = ranks[i]


def timed_on(t: Table, e: dict) -> str:
    """Where a time was measured, as one cell: ``cpu (AMD EPYC), b1, decode off``."""
    if not e["device"]:
        return ""
    device = e["device"] + (f" ({e['device_name']})" if e["device_name"] else "")
    return joined(device, f"b{e['batch_size']}" if e["batch_size"] else "", f"decode {e['decode']}", sep=", ")


def measured_against(t: Table, e: dict) -> str:
    """What a quality was measured against, as one cell: ``N 200, adm digits-heldout-stats.npz``."""
    return joined(f"N {e['quality_n']}" if e["quality_n"] else "", e["reference"], sep=", ")


# decimals of each metric in a Markdown cell (the CSV keeps QUALITY_DECIMALS for all)
METRIC_DECIMALS = {FID: 2, KID: 4, IS: 1, PRECISION: 3, RECALL: 3}


def quality_text(metric: str, value, low=None, high=None, named: bool = True) -> str:
    """A quality as a reader wants it, with its interval: ``fid 49.04 [45.97, 52.10]`` (without
    `named`, ``49.04 [45.97, 52.10]``); "" without a value."""
    if value is None:
        return ""
    d = METRIC_DECIMALS[metric]
    interval = f" [{low:.{d}f}, {high:.{d}f}]" if low is not None and high is not None else ""
    return (f"{metric} " if named else "") + f"{value:.{d}f}{interval}"


def quality_cell(t: Table, e: dict) -> str:
    """The point's quality with its interval (`quality_text`)."""
    return quality_text(e["metric"], e["value"], e["value_ci_low"], e["value_ci_high"])


FRONTIER_DECIMALS = {"value": QUALITY_DECIMALS, "value_ci_low": QUALITY_DECIMALS, "value_ci_high": QUALITY_DECIMALS,
                     "ms_per_image": 3, "ms_per_image_ci_low": 3, "ms_per_image_ci_high": 3, "speedup": 2,
                     "speedup_ci_low": 2, "speedup_ci_high": 2}
FRONTIER_TABLE = Table(
    "frontier", FRONTIER_COLUMNS, FRONTIER_DECIMALS,
    intervals={"value": False, "ms_per_image": False, "speedup": False},
    markdown_columns=("frontier", "quality_rank", "setting", "params", "nfe", "quality [95%]", "ms_per_image",
                      "speedup", "timed on", "measured against"),
    cells={"quality [95%]": quality_cell, "timed on": timed_on, "measured against": measured_against},
    empty=NO_POINTS,
)
