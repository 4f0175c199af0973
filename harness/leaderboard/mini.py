"""The mini track's tables: its models are toys trained on 8x8 digits and their FIDs are against
another reference, so their run files (``mini`` in the name, `harness.track`) stay out of the
main board and the plot and make tables of their own:

- ``leaderboard-mini.{csv,md}`` (`build_mini`): one row per track run x model x dtype x
  options, the trained FID beside the half-way snapshot's and the random weights', timings at
  batch 1 and at the largest batch.
- ``leaderboard-mini-speedup.{csv,md}`` (`build_mini_speedups`): the student over its teacher
  at exact decoding and at the teacher's fastest verified setting.

Their Markdown shows ten columns or fewer, joining related cells (a setting's dtype, options and
gate verdict; a timing with its interval and decoding passes); the CSV keeps every column.

Example::

    rows = read_runs(mini=True)
    mini = build_mini(rows, read_manifests())
    MINI_SPEEDUP_TABLE.to_markdown(build_mini_speedups(rows, mini))
"""

from __future__ import annotations

import math

from harness.leaderboard.choice import add_ranks, choose
from harness.leaderboard.render import Table, joined
from harness.leaderboard.rows import (
    MINI_SETTING,
    config_of,
    fid_cells,
    finite,
    is_random_weights,
    setting_name,
    sort_number,
    teacher_exact,
    text,
    usable,
)
from harness.pairs import teacher_of
from harness.results import (
    FID,
    MS_PER_IMAGE,
    PRECISION,
    RECALL,
    REFERENCE,
    SPEEDUP,
    VERIFIED,
)
from harness.settings import options_text

MINI_COLUMNS = (
    "fid_rank", "model", "family", "params", "nfe", "dtype", "options", "quality", "train_steps", "fid",
    "fid_ci_low", "fid_ci_high", "fid_half_steps", "half_steps", "fid_random", "precision", "recall",
    "precision_random", "recall_random", "quality_n", "ms_per_image", "ms_per_image_ci_low", "ms_per_image_ci_high",
    "iterations_mean", "iterations_max", "batch_size", "ms_per_image_batched", "ms_per_image_batched_ci_low",
    "ms_per_image_batched_ci_high", "iterations_mean_batched", "iterations_max_batched", "fid_reference", "weights",
    "track_run",
)


def _setting(t: Table, e: dict) -> str:
    """``float32; decoding=jacobi,jacobi_tol=0.01; verified``: dtype, options, the gate's verdict."""
    return joined(e["dtype"], e["options"], e["quality"])


def _fid(t: Table, e: dict) -> str:
    """``49.04 [45.97, 52.10], N 200, 2000 steps``: the trained FID, its samples, its training."""
    return joined(t.with_interval("fid", e), f"N {e['quality_n']}" if e["quality_n"] else "",
                  f"{e['train_steps']} steps" if e["train_steps"] else "", sep=", ")


def _baselines(t: Table, e: dict) -> str:
    """``66.43 at 1000 steps; random 358.75``: the half-way snapshot's and the random weights' FIDs."""
    half = t.cell("fid_half_steps", e["fid_half_steps"])
    return joined(half + (f" at {e['half_steps']} steps" if half and e["half_steps"] else ""),
                  f"random {t.cell('fid_random', e['fid_random'])}" if e["fid_random"] is not None else "")


def _coverage(t: Table, e: dict) -> str:
    """``0.245, 0.614; random 0.000, 0.000``: trained precision and recall, and the random weights'."""
    pair = [joined(t.cell(a, e[a]), t.cell(b, e[b]), sep=", ") for a, b in (("precision", "recall"),
                                                                           ("precision_random", "recall_random"))]
    return joined(pair[0], f"random {pair[1]}" if pair[1] else "")


def _timing(suffix: str):
    def cell(t: Table, e: dict) -> str:
        """``b64, 1.994 [1.812, 2.224], passes 8.75/15``: ms per image with its interval and decoding passes."""
        col = f"ms_per_image{suffix}"
        mean, most = e[f"iterations_mean{suffix}"], e[f"iterations_max{suffix}"]
        passes = f"passes {t.cell(f'iterations_mean{suffix}', mean)}/{text(most)}" if mean is not None else ""
        shown = t.with_interval(col, e)
        return joined(f"b{e['batch_size']}" if suffix and shown else "", shown, passes, sep=", ")
    return cell


MINI_TABLE = Table(
    "mini", MINI_COLUMNS,
    decimals={"fid": 2, "fid_ci_low": 2, "fid_ci_high": 2, "fid_half_steps": 2, "fid_random": 2, "precision": 3,
              "recall": 3, "precision_random": 3, "recall_random": 3, "ms_per_image": 3, "ms_per_image_ci_low": 3,
              "ms_per_image_ci_high": 3, "ms_per_image_batched": 3, "ms_per_image_batched_ci_low": 3,
              "ms_per_image_batched_ci_high": 3, "iterations_mean": 2, "iterations_mean_batched": 2},
    intervals={"fid": True, "ms_per_image": False, "ms_per_image_batched": False},
    markdown_columns=("fid_rank", "model", "params", "nfe", "setting", "fid [95%], N, training",
                      "fid half-way; random", "precision, recall", "ms per image at b1 [95%]",
                      "ms per image batched [95%]"),
    cells={"setting": _setting, "fid [95%], N, training": _fid, "fid half-way; random": _baselines,
           "precision, recall": _coverage, "ms per image at b1 [95%]": _timing(""),
           "ms per image batched [95%]": _timing("_batched")},
)
EXACT, FASTEST = "exact decoding", "fastest verified"  # the two bases of the mini speed-up table
MINI_SPEEDUP_COLUMNS = (
    "model", "dtype", "options", "teacher", "teacher_options", "basis", "batch_size", "speedup", "speedup_ci_low",
    "speedup_ci_high", "ms_per_image", "teacher_ms_per_image", "teacher_quality", "fid", "teacher_fid", "track_run",
)


def _pair(col: str, teacher_col: str):
    def cell(t: Table, e: dict) -> str:
        """``2.003 / 22.413``: the student's value over the teacher's."""
        return joined(t.cell(col, e[col]), t.cell(teacher_col, e[teacher_col]), sep=" / ")
    return cell


MINI_SPEEDUP_TABLE = Table(
    "mini_speedup", MINI_SPEEDUP_COLUMNS,
    decimals={"speedup": 1, "speedup_ci_low": 1, "speedup_ci_high": 1, "ms_per_image": 3, "teacher_ms_per_image": 3,
              "fid": 2, "teacher_fid": 2},
    intervals={"speedup": False},
    markdown_columns=("model", "setting", "teacher setting", "basis", "batch_size", "speedup",
                      "ms per image / teacher's", "teacher_quality", "fid / teacher's"),
    cells={"setting": lambda t, e: joined(e["dtype"], e["options"]),
           "teacher setting": lambda t, e: setting_name(e["teacher"], e["teacher_options"]),
           "ms per image / teacher's": _pair("ms_per_image", "teacher_ms_per_image"),
           "fid / teacher's": _pair("fid", "teacher_fid")},
)
# mini table column -> (weights' role, metric) of the quality row it shows
_SCORES = {"fid": ("trained", FID), "precision": ("trained", PRECISION), "recall": ("trained", RECALL),
           "fid_half_steps": ("half", FID), "fid_random": ("random", FID), "precision_random": ("random", PRECISION),
           "recall_random": ("random", RECALL)}


def _times(rows: list[dict]) -> dict[tuple, dict]:
    """(track run, model, dtype, options, batch size) -> the chosen generator-only ms per image row."""
    return choose([r for r in rows if r["metric"] == MS_PER_IMAGE and r["decode"] == "off"],
                  MINI_SETTING + ("batch_size",), by_n=False)


def _track_rows(rows: list[dict]) -> list[dict]:
    """The usable rows of the track's evals and benches: a track's sweep (rows with
    ``config.sweep``) is read by the frontier tables, not by these."""
    return [r for r in usable(rows) if "sweep" not in config_of(r)]


def build_mini(rows: list[dict], manifests: dict[str, dict]) -> list[dict]:
    """The mini table: one row per model x dtype x options (its setting), the trained FID with its
    interval beside the half-way snapshot's and the same architecture's with random weights
    (never ranked; both measured at the default setting), its timings at batch 1 and at its
    largest batch with their intervals and decoding passes, and the quality gate's verdict.

    Args:
        rows: measured rows of the mini run files (`read_runs(..., mini=True)`).
        manifests: weights -> role and steps (`read_manifests`); trained weights a manifest
            does not name count as fully trained, with unknown steps.

    Returns:
        Rows with the keys of `MINI_COLUMNS`, ranked by trained FID (`harness.leaderboard.choice`).
    """
    rows = _track_rows(rows)

    def role(r: dict) -> str:
        if is_random_weights(r["weights"]):
            return "random"
        return manifests.get(r["weights"], {}).get("role", "trained")

    quality = [dict(r, role=role(r)) for r in rows if r["metric"] in (FID, PRECISION, RECALL)]
    scores = choose(quality, MINI_SETTING + ("role", "metric"), by_n=True)
    times = _times(rows)
    board = {}
    width = len(MINI_SETTING)
    for setting in sorted({k[:width] for k in scores} | {k[:width] for k in times}):
        e = board[setting] = {c: None for c in MINI_COLUMNS}
        e.update(zip(MINI_SETTING, setting))
        for col, (r_role, metric) in _SCORES.items():
            r = scores.get(setting + (r_role, metric))
            e[col] = r["value"] if r else None
        fid, half = scores.get(setting + ("trained", FID)), scores.get(setting + ("half", FID))
        if fid:
            e.update(fid_cells(fid), weights=fid["weights"], quality=fid.get("quality") or None,
                     train_steps=manifests.get(fid["weights"], {}).get("steps"))
        if half:
            e["half_steps"] = manifests.get(half["weights"], {}).get("steps")
        mine = sorted((int(float(k[width])), r) for k, r in times.items() if k[:width] == setting and k[width])
        for suffix, (bs, r) in (("", next(((b, r) for b, r in mine if b == 1), (None, None))),
                                ("_batched", mine[-1] if mine and mine[-1][0] > 1 else (None, None))):
            if r is None:
                continue
            c = config_of(r)
            e[f"ms_per_image{suffix}"] = r["value"]
            e[f"ms_per_image{suffix}_ci_low"], e[f"ms_per_image{suffix}_ci_high"] = (finite(r["ci_low"]),
                                                                                    finite(r["ci_high"]))
            e[f"iterations_mean{suffix}"], e[f"iterations_max{suffix}"] = c.get("iterations_mean"), c.get(
                "iterations_max")
            e["quality"] = e["quality"] or r.get("quality") or None
            if suffix:
                e["batch_size"] = bs
        anyrow = next(r for r in rows if tuple(r[c] for c in MINI_SETTING) == setting)
        e["family"], e["params"], e["nfe"] = anyrow["family"], anyrow["params"], anyrow["nfe"]
    add_ranks(board, MINI_SETTING)
    return sorted(board.values(), key=lambda e: (e["fid_rank"] or math.inf, e["model"], e["dtype"], e["options"],
                                                 e["track_run"]))


def build_mini_speedups(rows: list[dict], mini: list[dict]) -> list[dict]:
    """Each student setting over its teacher (`harness.pairs`), per dtype and batch size, both ways:
    over the teacher at its exact decoding (TARFlow: sequential) and over the teacher's fastest
    setting whose timing is verified (or its reference), each with both FIDs.

    The speed-ups are the runs' ``speedup`` rows (the two timed in alternating rounds, with their
    intervals); a run without them (older than pairs) gives the ratio of the two settings' ms per
    image at the teacher's default options, exact decoding only, without an interval.

    Args:
        rows: measured rows of the mini run files.
        mini: `build_mini`'s table (the FIDs).

    Returns:
        Rows with the keys of `MINI_SPEEDUP_COLUMNS`, by model, dtype, options, batch size and basis.
    """
    rows = _track_rows(rows)
    fids = {tuple(e[c] for c in MINI_SETTING): e["fid"] for e in mini}
    ratios = [r for r in rows if r["metric"] == SPEEDUP and r["batch_size"] and r["decode"] == "off"]
    out = []

    def entry(r: dict, basis: str, teacher: str, teacher_options: str, value: float, low, high, ms, teacher_ms,
              teacher_quality) -> dict:
        run = r["track_run"]
        return {"model": r["model"], "dtype": r["dtype"], "options": r["options"], "teacher": teacher,
                "teacher_options": teacher_options, "basis": basis, "batch_size": r["batch_size"], "speedup": value,
                "speedup_ci_low": low, "speedup_ci_high": high, "ms_per_image": ms, "teacher_ms_per_image": teacher_ms,
                "teacher_quality": teacher_quality or None, "track_run": run,
                "fid": fids.get((run, r["model"], r["dtype"], r["options"])),
                "teacher_fid": fids.get((run, teacher, r["dtype"], teacher_options))}

    groups: dict[tuple, list[dict]] = {}
    for r in ratios:
        groups.setdefault(tuple(r[c] for c in MINI_SETTING) + (r["batch_size"],), []).append(r)
    for _, found in sorted(groups.items()):  # in key order
        exact = choose([r for r in found if teacher_exact(r)], ("model",), by_n=False)
        verified = [r for r in found if config_of(r).get("teacher_quality") in (REFERENCE, VERIFIED)]
        fastest = [min(verified, key=lambda r: float(config_of(r)["teacher_ms_per_image"]))] if verified else []
        for basis, chosen in ((EXACT, list(exact.values())), (FASTEST, fastest)):
            for r in chosen:
                c = config_of(r)
                out.append(entry(r, basis, c["teacher"], options_text(c.get("teacher_options") or {}), r["value"],
                                 finite(r["ci_low"]), finite(r["ci_high"]), c.get("fast_ms_per_image"),
                                 c.get("teacher_ms_per_image"), c.get("teacher_quality")))
    measured = {(e["track_run"], e["model"], e["dtype"]) for e in out}
    times = _times(rows)
    for (run, model, dtype, options, bs), r in sorted(times.items()):
        teacher = teacher_of(model)
        t = times.get((run, teacher, dtype, "", bs)) if teacher else None
        if t is not None and (run, model, dtype) not in measured:
            out.append(entry(r, EXACT, teacher, "", t["value"] / r["value"], None, None, r["value"], t["value"],
                             t.get("quality")))
    return sorted(out, key=lambda e: (e["model"], e["dtype"], e["options"], sort_number(e["batch_size"]), e["basis"],
                                      e["track_run"]))
