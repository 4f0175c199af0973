"""The leaderboard: published rows and measured run files -> one CSV, one Markdown table, one plot.

Inputs are `results/published.csv` (paper figures, the results schema plus an `evidence`
column: ``verified`` or ``secondary``) and every run file under `results/runs/`, the curated
runs that are committed. A user's own runs (`nfebench bench` writes them to the git-ignored
`results/local/`) enter only when asked (``include_local``), and the tables made with them
are written to `results/local/`, never over the committed ones. Outputs are regenerated,
never hand-edited:

- ``leaderboard.csv``: one row per model x setting. A setting is (model, source, nfe,
  device, device_name, backend, dtype, compiled, batch_size); its timing columns are
  ``ms_per_image`` (generator only, decode off) and ``ms_per_image_decode`` (decode on),
  its speed-up columns ``speedup`` and ``speedup_decode`` with their 95% intervals.
  FID and IS belong to (model, source, nfe) and are repeated on each of its settings, with
  ``quality_n`` (samples) and ``fid_reference`` (mode and reference batch) beside them.
- ``leaderboard.md``: the same table in Markdown.
- ``pareto.png``: FID against generator ms per image (log axis).

Rules (each one in one place below):
- Only rows with status ``ok`` and a value count; oom/error rows stay in the run files.
- A quality row whose `weights` contains ``random-init`` never gets a FID/IS column or a
  rank: random weights say nothing about quality. Its timings do count (speed does not
  depend on the weights' values).
- Where one setting was measured more than once, one row is chosen, never by date: the
  narrowest 95% interval relative to its value first (a schema-1 row without one counts
  ``value +- 2 x spread``, and a row with neither counts as infinitely wide), then the most
  samples ``n``, then the greater ``run_id``. For quality the most samples come first (a FID
  of more samples is a less biased one, not only a less noisy one), then the interval.
- ``speedup`` is the model's measured ``speedup`` row for the setting (its teacher timed in
  alternating rounds in the same run, `harness.pairs`), with ``speedup_ci_low`` and
  ``speedup_ci_high``; where there is none (paper rows, runs of schema 1), the teacher's ms
  per image divided by the row's in the same source, device, backend, dtype, compiled mode
  and batch size, with no interval.
- Run files whose name contains ``mini`` (the mini track, `harness.track`) are kept out of
  the main table and the plot: their models are toys trained on 8x8 digits, their FIDs are
  against another reference. They make their own table, ``leaderboard-mini.csv`` and
  ``leaderboard-mini.md`` (see `build_mini`), written whenever such run files exist.
- Bytes depend only on the inputs: rows sorted, floats formatted to fixed decimals, no
  timestamps. The PNG is not covered by this promise (it embeds the matplotlib version).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from harness.errors import InputError
from harness.pairs import teacher_of
from harness.results import (CALIBRATION_MS, FID, IS, MS_PER_IMAGE, OK, PRECISION, RECALL, SPEEDUP, atomic_write,
                             read_run)
from harness.sampler import RANDOM_INIT
from harness.timing.stats import interval_or_spread

EVIDENCE = ("verified", "secondary")

# Columns whose numbers are canonicalised by `text`, so 8, 8.0 and "8" key alike.
NUMERIC_CELLS = ("schema_version", "params", "nfe", "batch_size", "guidance", "seed", "n")
SETTING = ("model", "source", "nfe", "device", "device_name", "backend", "dtype", "compiled", "batch_size")
QUALITY_KEY = ("model", "source", "nfe")
LEADERBOARD_COLUMNS = (
    "fid_rank", "model", "family", "params", "nfe", "source", "device", "device_name", "backend", "dtype",
    "compiled", "batch_size", "ms_per_image", "ms_per_image_decode", "teacher", "speedup", "speedup_ci_low",
    "speedup_ci_high", "speedup_decode", "speedup_decode_ci_low", "speedup_decode_ci_high",
    "fid", "is", "quality_n", "fid_reference", "weights", "evidence", "citation",
)
# Fixed decimals per numeric column: the same inputs always print the same bytes.
_DECIMALS = {"ms_per_image": 3, "ms_per_image_decode": 3, "speedup": 1, "speedup_ci_low": 1, "speedup_ci_high": 1,
             "speedup_decode": 1, "speedup_decode_ci_low": 1, "speedup_decode_ci_high": 1, "fid": 2, "is": 1}

DEFAULT_PUBLISHED = Path("results/published.csv")
DEFAULT_RUNS = Path("results/runs")  # curated runs, committed
DEFAULT_LOCAL = Path("results/local")  # a user's own runs (nfebench bench's default), git-ignored
DEFAULT_OUT = Path("results")

MINI = "mini"
MINI_COLUMNS = (
    "fid_rank", "model", "family", "params", "nfe", "train_steps", "fid", "fid_half_steps", "half_steps",
    "fid_random", "precision", "recall", "precision_random", "recall_random", "quality_n", "ms_per_image",
    "ms_per_image_batched", "batch_size", "speedup_batched", "fid_reference", "weights",
)
_MINI_DECIMALS = {"fid": 2, "fid_half_steps": 2, "fid_random": 2, "precision": 3, "recall": 3,
                  "precision_random": 3, "recall_random": 3, "ms_per_image": 3, "ms_per_image_batched": 3,
                  "speedup_batched": 1}


def text(value) -> str:
    """A numeric cell as canonical text: ``8``, ``8.0`` and ``"8"`` all become ``"8"``; NaN and
    None become ``""``; words stay as they are.

    Files written by different tools (or read by pandas with different column dtypes) then
    agree on setting keys.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    s = str(value).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    if s.lower() in ("nan", "inf", "-inf", "infinity") or not math.isfinite(f):
        return s
    return str(int(f)) if f.is_integer() else repr(f)


def is_random_weights(weights: str) -> bool:
    """True for weights measured at random init, alone or combined (``random-init+vae:sha256:...``)."""
    return RANDOM_INIT in str(weights)


def read_published(path: str | Path = DEFAULT_PUBLISHED) -> list[dict]:
    """Paper rows of `published.csv`, checked: schema columns plus `evidence`, source ``paper``,
    status ``ok``, a finite value, a citation, and no figure given twice.

    Example::

        rows = read_published("results/published.csv")
        [r["value"] for r in rows if r["model"] == "biflow-b2" and r["metric"] == "fid"]  # [2.39]
    """
    df = read_run(path)
    if "evidence" not in df.columns:
        raise InputError(f"{path} lacks the column 'evidence' (verified|secondary) that published rows need")
    rows = records(df, path)
    seen: dict[tuple, int] = {}
    for i, r in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path} line {i} ({r['model']} {r['metric']})"
        if r["source"] != "paper":
            raise InputError(f"{where}: source is {r['source']!r}; published rows have source 'paper'")
        if r["evidence"] not in EVIDENCE:
            raise InputError(f"{where}: evidence is {r['evidence']!r}; use one of {', '.join(EVIDENCE)}")
        if r["status"] != OK or not math.isfinite(r["value"]):
            raise InputError(f"{where}: a paper row needs status 'ok' and a numeric value")
        if not r["citation"]:
            raise InputError(f"{where}: no citation; every paper figure names its source")
        key = tuple(r[c] for c in SETTING) + (r["decode"], r["metric"])
        if key in seen:
            raise InputError(f"{where}: the same figure is already given on line {seen[key]}")
        seen[key] = i
    return rows


def is_mini(path: str | Path) -> bool:
    """True for the mini track's run files and manifests (``mini`` in the file name)."""
    return MINI in Path(path).name


def read_runs(runs_dir: str | Path = DEFAULT_RUNS, *, mini: bool = False) -> list[dict]:
    """Measured rows of every ``*.csv`` run file under `runs_dir` (recursively, in path order):
    those of the main table, or with `mini` those of the mini track."""
    rows: list[dict] = []
    for path in sorted(Path(runs_dir).rglob("*.csv")):
        if is_mini(path) == mini:
            rows.extend(records(read_run(path), path))
    return rows


def _number(v, path, col: str) -> float:
    """A value/spread cell as a float; "" and "nan" (what rows_to_csv writes for a float NaN) are NaN."""
    if isinstance(v, str):
        v = v.strip()
        if v.lower() in ("", "nan"):
            return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        raise InputError(f"{path}: column {col!r} holds {v!r}; it must be a number or empty") from None


FLOAT_CELLS = ("value", "spread", "ci_low", "ci_high")


def records(df, path) -> list[dict]:
    """Rows of a run DataFrame (`harness.results.read_run`) as dicts of text (numbers canonical), with
    `value`, `spread`, `ci_low` and `ci_high` as floats (NaN when empty) and `evidence` ("" for
    measured rows). `path` names the file in error messages."""
    numeric = {col: [_number(v, path, col) for v in df[col]] for col in FLOAT_CELLS}
    for col in NUMERIC_CELLS:
        for v in df[col]:
            if text(v) and math.isnan(_number(text(v), path, col)):
                raise InputError(f"{path}: column {col!r} holds {v!r}; it must be a number or empty")
    out = []
    for i, rec in enumerate(df.to_dict("records")):
        row = {k: text(v) if k in NUMERIC_CELLS else ("" if v is None else str(v).strip())
               for k, v in rec.items() if k not in FLOAT_CELLS}
        row.update({col: numeric[col][i] for col in FLOAT_CELLS})
        row.setdefault("evidence", "")
        out.append(row)
    return out


def relative_width(r: dict) -> float:
    """Width of a row's 95% interval over its value (`interval_or_spread`: a schema-1 row's spread
    stands in); infinite with neither or a zero value."""
    found = interval_or_spread(r["value"], r["ci_low"], r["ci_high"], r["spread"])
    if found is None or r["value"] == 0:
        return math.inf
    return (found[1] - found[0]) / abs(r["value"])


def _choose(rows: Iterable[dict], key_cols: tuple, by_n: bool) -> dict[tuple, dict]:
    """One row per key: the narrowest relative interval, then the most samples, then the greater run
    id; with `by_n` (quality) the most samples first. Never the file date."""
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


def _teacher(r: dict) -> str:
    """The teacher a speedup row names in its config."""
    try:
        config = json.loads(r["config"]) if r["config"] else {}
    except ValueError:
        return ""
    return str(config.get("teacher", "")) if isinstance(config, dict) else ""


def build(rows: list[dict]) -> list[dict]:
    """Leaderboard rows (numbers as floats, blanks as None) from published and measured rows.

    Args:
        rows: rows as `read_published` / `read_runs` return them.

    Returns:
        One dict per model x setting with the keys of `LEADERBOARD_COLUMNS`, sorted by FID
        rank (rows without FID last), then model and setting.
    """
    usable = [r for r in rows if r["status"] == OK and math.isfinite(r["value"])
              and r["metric"] != CALIBRATION_MS]
    timing = [r for r in usable if r["metric"] == MS_PER_IMAGE and r["decode"] in ("on", "off")]
    quality = [r for r in usable if r["metric"] in (FID, IS) and not is_random_weights(r["weights"])]
    # measured speed-ups at one batch size (the best-throughput rows have none: no setting of their own)
    ratios = [dict(r, teacher=_teacher(r)) for r in usable
              if r["metric"] == SPEEDUP and r["batch_size"] and r["decode"] in ("on", "off")]

    times = _choose(timing, SETTING + ("decode",), by_n=False)
    scores = _choose(quality, QUALITY_KEY + ("metric",), by_n=True)
    speedups = _choose(ratios, SETTING + ("decode", "teacher"), by_n=False)

    board: dict[tuple, dict] = {}
    sources: dict[tuple, list[dict]] = {}
    for k, r in times.items():
        setting = k[:-1]
        entry = board.setdefault(setting, _blank(r))
        entry["ms_per_image_decode" if r["decode"] == "on" else "ms_per_image"] = r["value"]
        sources.setdefault(setting, []).append(r)
    for (model, source, nfe, metric), r in scores.items():
        settings = [s for s in board if s[:3] == (model, source, nfe)]
        if not settings:
            settings = [(model, source, nfe) + ("",) * (len(SETTING) - 3)]
            board[settings[0]] = _blank(r, timing=False)
        for s in settings:
            board[s][metric] = r["value"]
            if metric == FID:
                board[s]["quality_n"] = int(float(r["n"])) if r["n"] else None
                board[s]["fid_reference"] = _reference(r)
            sources.setdefault(s, []).append(r)

    for s, entry in board.items():
        contributing = sources[s]
        entry["weights"] = "; ".join(sorted({r["weights"] for r in contributing if r["weights"]}))
        # Measured rows cite the run they came from.
        entry["citation"] = "; ".join(sorted({r["citation"] or f"run {r['run_id']}" for r in contributing}))
        evidence = {r["evidence"] for r in contributing if r["evidence"]}
        entry["evidence"] = "secondary" if "secondary" in evidence else ("verified" if evidence else "")
        for col in ("family", "params"):
            entry[col] = entry[col] or next((r[col] for r in contributing if r[col]), "")

    _add_speedups(board, speedups)
    _add_ranks(board)
    return sorted(board.values(), key=_sort_key)


def read_manifests(runs_dir: str | Path = DEFAULT_RUNS) -> dict[str, dict]:
    """weights -> {"role", "steps"} from the mini track's manifests (``*mini*.json``, see `harness.track`)."""
    out: dict[str, dict] = {}
    for path in sorted(Path(runs_dir).rglob("*.json")):
        if not is_mini(path) or path.name.endswith(".pyperf.json"):
            continue
        try:
            manifest = json.loads(path.read_text())
            checkpoints = manifest["checkpoints"]
            for c in checkpoints:
                out[c["weights"]] = {"role": c["role"], "steps": c["steps"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a readable track manifest ({exc!r})") from exc
    return out


def build_mini(rows: list[dict], manifests: dict[str, dict]) -> list[dict]:
    """The mini table: one row per model, its trained FID beside the half-way snapshot's and
    the same architecture's with random weights (never ranked), and its speed.

    Args:
        rows: measured rows of the mini run files (`read_runs(..., mini=True)`).
        manifests: weights -> role and steps (`read_manifests`); trained weights a manifest
            does not name count as fully trained, with unknown steps.

    Returns:
        Rows with the keys of `MINI_COLUMNS`, ranked by trained FID.
    """
    usable = [r for r in rows if r["status"] == OK and math.isfinite(r["value"]) and r["metric"] != CALIBRATION_MS]

    def role(r: dict) -> str:
        if is_random_weights(r["weights"]):
            return "random"
        return manifests.get(r["weights"], {}).get("role", "trained")

    quality = [dict(r, role=role(r)) for r in usable if r["metric"] in (FID, PRECISION, RECALL)]
    scores = _choose(quality, ("model", "role", "metric"), by_n=True)
    times = _choose([r for r in usable if r["metric"] == MS_PER_IMAGE and r["decode"] == "off"],
                    ("model", "batch_size"), by_n=False)
    board = {}
    for model in sorted({k[0] for k in scores} | {k[0] for k in times}):
        e = board[model] = {c: None for c in MINI_COLUMNS}
        e["model"] = model
        for col, (r_role, metric) in {"fid": ("trained", FID), "precision": ("trained", PRECISION),
                                      "recall": ("trained", RECALL), "fid_half_steps": ("half", FID),
                                      "fid_random": ("random", FID), "precision_random": ("random", PRECISION),
                                      "recall_random": ("random", RECALL)}.items():
            r = scores.get((model, r_role, metric))
            e[col] = r["value"] if r else None
        fid, half = scores.get((model, "trained", FID)), scores.get((model, "half", FID))
        if fid:
            e["quality_n"] = int(float(fid["n"])) if fid["n"] else None
            e["fid_reference"], e["weights"] = _reference(fid), fid["weights"]
            e["train_steps"] = manifests.get(fid["weights"], {}).get("steps")
        if half:
            e["half_steps"] = manifests.get(half["weights"], {}).get("steps")
        mine = sorted((int(float(k[1])), r) for k, r in times.items() if k[0] == model and k[1])
        if mine:
            e["ms_per_image"] = next((r["value"] for b, r in mine if b == 1), None)
            e["batch_size"], e["ms_per_image_batched"] = mine[-1][0], mine[-1][1]["value"]
        anyrow = next(r for r in usable if r["model"] == model)
        e["family"], e["params"], e["nfe"] = anyrow["family"], anyrow["params"], anyrow["nfe"]
    for model, e in board.items():
        t = board.get(teacher_of(model) or "")
        if t and t["ms_per_image_batched"] and e["ms_per_image_batched"] and t["batch_size"] == e["batch_size"]:
            e["speedup_batched"] = t["ms_per_image_batched"] / e["ms_per_image_batched"]
    _add_ranks(board, key=("model",))
    return sorted(board.values(), key=lambda e: (e["fid_rank"] or math.inf, e["model"]))


def _reference(r: dict) -> str:
    """What a FID was measured against, from the row's config: ``adm VIRTUAL_imagenet256_labeled.npz``.
    FIDs against different references (or few samples) do not compare: the column says so."""
    try:
        config = json.loads(r["config"]) if r["config"] else {}
    except ValueError:
        return ""
    if not isinstance(config, dict):
        return ""
    return " ".join(str(config[k]) for k in ("mode", "reference") if config.get(k))


def _blank(r: dict, timing: bool = True) -> dict:
    entry = {c: None for c in LEADERBOARD_COLUMNS}
    for c in SETTING:
        entry[c] = r[c] if timing or c in QUALITY_KEY else ""
    entry["family"], entry["params"] = r["family"], r["params"]
    return entry


def _add_speedups(board: dict[tuple, dict], measured: dict[tuple, dict]) -> None:
    """`teacher` and the speed-up columns: the measured speedup row of the setting where one was
    chosen, else the ratio of the teacher's and the row's ms per image (no interval)."""
    for s, entry in board.items():
        teacher = teacher_of(entry["model"])
        if teacher is None:
            continue
        peers = sorted(t for t in board if t[0] == teacher and t[1] == s[1] and t[3:] == s[3:])
        for decode, ms, col in (("off", "ms_per_image", "speedup"), ("on", "ms_per_image_decode", "speedup_decode")):
            row = measured.get(s + (decode, teacher))
            if row is not None:
                entry[col], entry[col + "_ci_low"], entry[col + "_ci_high"] = (
                    row["value"], _finite(row["ci_low"]), _finite(row["ci_high"]))
            elif peers and entry[ms] and board[peers[0]][ms]:
                entry[col] = board[peers[0]][ms] / entry[ms]
            if peers or row is not None:
                entry["teacher"] = teacher


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _add_ranks(board: dict, key: tuple = QUALITY_KEY) -> None:
    """Rank by FID over the distinct `key`s (the main table: model, source, nfe), ties sharing
    the lower rank."""
    fids = {tuple(e[c] for c in key): e["fid"] for e in board.values() if e["fid"] is not None}
    ordered = sorted(fids.values())
    for e in board.values():
        if e["fid"] is not None:
            e["fid_rank"] = ordered.index(e["fid"]) + 1


def _num(s) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.inf


def _sort_key(e: dict) -> tuple:
    rank = e["fid_rank"] if e["fid_rank"] is not None else math.inf
    return (rank, e["model"], e["source"], _num(e["nfe"]), e["nfe"], e["device"], e["device_name"], e["backend"],
            e["dtype"], e["compiled"], _num(e["batch_size"]), e["batch_size"])


def _cell(col: str, v, decimals: dict) -> str:
    if v is None or v == "":
        return ""
    if col in decimals:
        return f"{v:.{decimals[col]}f}"
    return text(v)


def _table_csv(board: list[dict], columns: tuple, decimals: dict) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for e in board:
        w.writerow([_cell(c, e[c], decimals) for c in columns])
    return buf.getvalue()


def _table_markdown(board: list[dict], columns: tuple, decimals: dict) -> str:
    numeric = set(decimals) | {"fid_rank", "params", "nfe", "batch_size", "quality_n", "train_steps", "half_steps"}
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|"]
    for e in board:
        cells = [_cell(c, e[c], decimals).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(board: list[dict]) -> str:
    """The leaderboard as CSV text (``\\n`` line ends, fixed decimals)."""
    return _table_csv(board, LEADERBOARD_COLUMNS, _DECIMALS)


def to_markdown(board: list[dict]) -> str:
    """The leaderboard as a Markdown table with the same cells as the CSV."""
    return _table_markdown(board, LEADERBOARD_COLUMNS, _DECIMALS)


def pareto_points(board: list[dict]) -> list[dict]:
    """Points of the Pareto plot: FID against generator-only ms per image.

    Each point is the fastest batch size of one (model, source, nfe, device, device_name,
    backend, dtype, compiled). Kinds: ``paper`` (both figures published), ``measured`` (both
    measured here with real weights), ``measured-time`` (measured timing, the paper's FID for
    the same model id and NFE, or any NFE where the paper prints none, as for autoregressive
    flows: random-weight runs time the architecture, not its quality).
    """
    paper_fid = {(e["model"], e["nfe"]): e["fid"] for e in board if e["source"] == "paper" and e["fid"] is not None}
    # Autoregressive rows print no NFE: their paper FID pairs with a measured row of any NFE.
    paper_fid_any_nfe = {m: f for (m, nfe), f in paper_fid.items() if nfe == ""}
    best: dict[tuple, dict] = {}
    for e in board:
        if e["ms_per_image"] is None:
            continue
        if e["fid"] is not None:
            fid, kind = e["fid"], ("paper" if e["source"] == "paper" else "measured")
        elif e["source"] == "measured" and (e["model"], e["nfe"]) in paper_fid:
            fid, kind = paper_fid[(e["model"], e["nfe"])], "measured-time"
        elif e["source"] == "measured" and e["model"] in paper_fid_any_nfe:
            fid, kind = paper_fid_any_nfe[e["model"]], "measured-time"
        else:
            continue
        k = (e["model"], e["source"], e["nfe"], e["device"], e["device_name"], e["backend"], e["dtype"], e["compiled"])
        point = {"model": e["model"], "family": e["family"], "device": e["device"] or "?",
                 "batch_size": e["batch_size"], "ms": e["ms_per_image"], "fid": fid, "kind": kind}
        if k not in best or point["ms"] < best[k]["ms"]:
            best[k] = point
    return [best[k] for k in sorted(best)]


def _frontier(points: list[dict]) -> list[dict]:
    """Points no other point beats on both time and FID, fastest first."""
    front: list[dict] = []
    for p in sorted(points, key=lambda p: (p["ms"], p["fid"])):
        if not front or p["fid"] < front[-1]["fid"]:
            front.append(p)
    return front


def plot_pareto(board: list[dict], path: str | Path) -> int:
    """Draw `pareto.png`: published points hollow, measured filled, measured timing with a
    paper FID half-filled; returns the number of points. Needs matplotlib."""
    try:
        import matplotlib
    except ImportError as exc:
        raise InputError("the Pareto plot needs matplotlib: pip install matplotlib (or pass --no-plot)") from exc
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    points = pareto_points(board)
    families = sorted({p["family"] for p in points})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    style = {"paper": ("none", "paper: time and FID"), "measured": ("full", "measured: time and FID"),
             "measured-time": ("left", "measured time, paper FID")}
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    for p in points:
        fill, _ = style[p["kind"]]
        ax.plot(p["ms"], p["fid"], marker="o", markersize=9, linestyle="none", color=colours[p["family"]],
                fillstyle=fill, markeredgewidth=1.5)
        label = f"{p['model']} ({p['device']}" + (f", b{p['batch_size']}" if p["batch_size"] else "") + ")"
        ax.annotate(label, (p["ms"], p["fid"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    frontier = _frontier(points)
    if len(frontier) > 1:
        ax.step([p["ms"] for p in frontier], [p["fid"] for p in frontier], where="post", color="0.6",
                linestyle="--", linewidth=1, label="Pareto front (all points)")
    for kind, (fill, name) in style.items():  # legend entries for marker fill, in grey
        ax.plot([], [], marker="o", linestyle="none", color="0.3", fillstyle=fill, markersize=9, label=name)
    for f in families:
        ax.plot([], [], marker="s", linestyle="none", color=colours[f], label=f)
    ax.set_xscale("log")
    ax.set_xlabel("generator ms per image (log scale; decode excluded)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title("nfebench: quality against speed, class-conditional ImageNet 256x256")
    ax.grid(True, which="both", alpha=0.3)
    if points:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no rows with both a FID and a generator time", transform=ax.transAxes, ha="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return len(points)


def write_leaderboard(published: str | Path = DEFAULT_PUBLISHED, runs: str | Path = DEFAULT_RUNS,
                      out_dir: str | Path = DEFAULT_OUT, plot: bool = True,
                      local: str | Path | None = None) -> dict[str, Path]:
    """Regenerate ``leaderboard.csv``, ``leaderboard.md`` and (if `plot`) ``pareto.png``.

    Args:
        published: the paper rows (`read_published` checks them).
        runs: folder searched recursively for run files (``*.csv``); may be empty or absent.
        out_dir: where the three files are written, atomically.
        plot: draw the Pareto plot (needs matplotlib).
        local: a second folder of run files (a user's own, `DEFAULT_LOCAL`) read with `runs`;
            None reads none. `out_dir` must then not be `runs`'s parent folder, where the
            committed tables live.

    Returns:
        Output name -> path written.

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
    rows = read_published(published) + [r for f in folders for r in read_runs(f)]
    board = build(rows)
    paths = {"csv": out_dir / "leaderboard.csv", "md": out_dir / "leaderboard.md"}
    atomic_write(paths["csv"], to_csv(board))
    atomic_write(paths["md"], to_markdown(board))
    mini_rows = [r for f in folders for r in read_runs(f, mini=True)]
    if mini_rows:
        mini = build_mini(mini_rows, {k: v for f in folders for k, v in read_manifests(f).items()})
        paths["mini_csv"], paths["mini_md"] = out_dir / "leaderboard-mini.csv", out_dir / "leaderboard-mini.md"
        atomic_write(paths["mini_csv"], _table_csv(mini, MINI_COLUMNS, _MINI_DECIMALS))
        atomic_write(paths["mini_md"], _table_markdown(mini, MINI_COLUMNS, _MINI_DECIMALS))
    if plot:
        paths["png"] = out_dir / "pareto.png"
        plot_pareto(board, paths["png"])
    return paths
