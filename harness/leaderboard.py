"""The leaderboard: published rows and measured run files -> one CSV, one Markdown table, one plot.

Inputs are `results/published.csv` (paper figures, the results schema plus an `evidence`
column: ``verified`` or ``secondary``) and every run file under `results/runs/`, the curated
runs that are committed. A user's own runs (`nfebench bench` writes them to the git-ignored
`results/local/`) enter only when asked (``include_local``), and the tables made with them
are written to `results/local/`, never over the committed ones. Outputs are regenerated,
never hand-edited:

- ``leaderboard.csv``: one row per model x setting. A setting is (model, source, nfe,
  device, device_name, backend, dtype, compiled, batch_size, options), ``options`` being the
  sampler options of ``config.options`` (`harness.settings.options_text`, "" for the
  defaults); its timing columns are ``ms_per_image`` (generator only, decode off) and
  ``ms_per_image_decode`` (decode on), ``quality`` the quality gate's verdict on its timings
  (`harness.quality`: reference, verified, failed, unverified; empty for rows older than the
  gate), its speed-up columns ``speedup`` and ``speedup_decode`` with their 95% intervals.
  FID (with its interval ``fid_ci_low``/``fid_ci_high``) and IS belong to (model, source, nfe,
  backend, dtype, compiled, options), what makes the samples, and are repeated on each of its
  settings (devices, batch sizes), with ``quality_n`` (samples) and ``fid_reference`` (mode
  and reference batch) beside them.
- ``leaderboard.md``: the same table in Markdown, each interval beside its value
  (``49.04 [45.10, 52.90]``), a ranked FID without one marked ``(no interval)``.
- ``pareto.png``: FID against generator ms per image (log axis).

Rules (each one in one place below):
- Only rows with status ``ok`` and a value count; oom/error rows stay in the run files.
- A quality row whose `weights` contains ``random-init`` never gets a FID/IS column or a
  rank: random weights say nothing about quality. Its timings do count (speed does not
  depend on the weights' values).
- Ranks (`fid_rank`) compare only FIDs of equal N, reference and Inception network, and never
  rank a difference their 95% intervals cannot resolve: with se = (ci_high - ci_low) / 3.92,
  two FIDs differ only when |a - b| > 1.96 sqrt(se_a^2 + se_b^2); a FID's rank is one more than
  the FIDs that are resolved lower than it, so unresolved ones share a rank. A FID without an
  interval (paper rows, older runs) has se 0: among themselves such FIDs rank by value, as
  ties share the lower rank.
- Where one setting was measured more than once, one row is chosen, never by date: the
  narrowest 95% interval relative to its value first (a schema-1 row without one counts
  ``value +- 2 x spread``, and a row with neither counts as infinitely wide), then the most
  samples ``n``, then the greater ``run_id``. For quality the most samples come first (a FID
  of more samples is a less biased one, not only a less noisy one), then the interval.
- ``speedup`` is the model's measured ``speedup`` row for the setting over its teacher at the
  teacher's exact decoding (``config.teacher_exact``; the teacher timed in alternating rounds
  in the same run, `harness.pairs`), with ``speedup_ci_low`` and ``speedup_ci_high``; where
  there is none (paper rows, runs of schema 1), the teacher's ms per image at its default
  options divided by the row's in the same source, device, backend, dtype, compiled mode and
  batch size, with no interval.
- The Pareto plot pairs a measured time with a paper's FID only for a setting whose timing is
  its own reference or verified (older rows: float32, eager, default options), and its legend
  says so; a fast setting's unverified time is never drawn at a FID it was not shown to keep.
- Run files whose name contains ``mini`` (the mini track, `harness.track`) are kept out of
  the main table and the plot: their models are toys trained on 8x8 digits, their FIDs are
  against another reference. They make their own tables, ``leaderboard-mini.{csv,md}`` (one
  row per model x dtype x options, see `build_mini`) and ``leaderboard-mini-speedup.{csv,md}``
  (the student over its teacher at exact decoding and at the teacher's fastest verified
  setting, see `build_mini_speedups`), written whenever such run files exist.
- Bytes depend only on the inputs: rows sorted, floats formatted to fixed decimals, no
  timestamps. The PNG is not covered by this promise (it embeds the matplotlib version).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from adapters.api.errors import InputError
from harness.pairs import teacher_of
from harness.results import (CALIBRATION_MS, FID, IS, MS_PER_IMAGE, OK, PRECISION, RECALL, REFERENCE, SPEEDUP,
                             VERIFIED, atomic_write, read_run)
from adapters.api.sampler import RANDOM_INIT
from harness.settings import options_text
from harness.timing.stats import interval_or_spread

EVIDENCE = ("verified", "secondary")

# Columns whose numbers are canonicalised by `text`, so 8, 8.0 and "8" key alike.
NUMERIC_CELLS = ("schema_version", "params", "nfe", "batch_size", "guidance", "seed", "n")
SETTING = ("model", "source", "nfe", "device", "device_name", "backend", "dtype", "compiled", "batch_size", "options")
# What makes the samples: a FID belongs to these and holds for every device and batch size.
QUALITY_KEY = ("model", "source", "nfe", "backend", "dtype", "compiled", "options")
LEADERBOARD_COLUMNS = (
    "fid_rank", "model", "family", "params", "nfe", "source", "device", "device_name", "backend", "dtype",
    "compiled", "batch_size", "options", "ms_per_image", "ms_per_image_decode", "quality", "teacher", "speedup",
    "speedup_ci_low", "speedup_ci_high", "speedup_decode", "speedup_decode_ci_low", "speedup_decode_ci_high",
    "fid", "fid_ci_low", "fid_ci_high", "is", "quality_n", "fid_reference", "weights", "evidence", "citation",
)
# Fixed decimals per numeric column: the same inputs always print the same bytes.
_DECIMALS = {"ms_per_image": 3, "ms_per_image_decode": 3, "speedup": 1, "speedup_ci_low": 1, "speedup_ci_high": 1,
             "speedup_decode": 1, "speedup_decode_ci_low": 1, "speedup_decode_ci_high": 1, "fid": 2, "fid_ci_low": 2,
             "fid_ci_high": 2, "is": 1}
# Markdown shows these with their interval in one cell; True: a missing interval is said ("(no interval)").
_INTERVALS = {"fid": True, "speedup": False, "speedup_decode": False}

DEFAULT_PUBLISHED = Path("results/published.csv")
DEFAULT_RUNS = Path("results/runs")  # curated runs, committed
DEFAULT_LOCAL = Path("results/local")  # a user's own runs (nfebench bench's default), git-ignored
DEFAULT_OUT = Path("results")

MINI = "mini"
# A mini track run's files: <track run>-<part>.csv (`harness.track`), longest part first.
MINI_PARTS = ("-bench-bf16", "-bench", "-trained", "-half", "-random")
# A row of the mini tables; each track run stands alone (its own trained weights). It times eager torch only.
MINI_SETTING = ("track_run", "model", "dtype", "options")
MINI_COLUMNS = (
    "fid_rank", "model", "family", "params", "nfe", "dtype", "options", "quality", "train_steps", "fid",
    "fid_ci_low", "fid_ci_high", "fid_half_steps", "half_steps", "fid_random", "precision", "recall",
    "precision_random", "recall_random", "quality_n", "ms_per_image", "ms_per_image_ci_low", "ms_per_image_ci_high",
    "iterations_mean", "iterations_max", "batch_size", "ms_per_image_batched", "ms_per_image_batched_ci_low",
    "ms_per_image_batched_ci_high", "iterations_mean_batched", "iterations_max_batched", "fid_reference", "weights",
    "track_run",
)
_MINI_DECIMALS = {"fid": 2, "fid_ci_low": 2, "fid_ci_high": 2, "fid_half_steps": 2, "fid_random": 2, "precision": 3,
                  "recall": 3, "precision_random": 3, "recall_random": 3, "ms_per_image": 3, "ms_per_image_ci_low": 3,
                  "ms_per_image_ci_high": 3, "ms_per_image_batched": 3, "ms_per_image_batched_ci_low": 3,
                  "ms_per_image_batched_ci_high": 3, "iterations_mean": 2, "iterations_mean_batched": 2}
_MINI_INTERVALS = {"fid": True, "ms_per_image": False, "ms_per_image_batched": False}
EXACT, FASTEST = "exact decoding", "fastest verified"  # the two bases of the mini speed-up table
MINI_SPEEDUP_COLUMNS = (
    "model", "dtype", "options", "teacher", "teacher_options", "basis", "batch_size", "speedup", "speedup_ci_low",
    "speedup_ci_high", "ms_per_image", "teacher_ms_per_image", "teacher_quality", "fid", "teacher_fid", "track_run",
)
_MINI_SPEEDUP_DECIMALS = {"speedup": 1, "speedup_ci_low": 1, "speedup_ci_high": 1, "ms_per_image": 3,
                          "teacher_ms_per_image": 3, "fid": 2, "teacher_fid": 2}
_MINI_SPEEDUP_INTERVALS = {"speedup": False}


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


def track_run(path: str | Path) -> str:
    """The mini track run a file belongs to: its name without the part (``mini-full-<run id>`` of
    ``mini-full-<run id>-bench-bf16.csv``); the run's manifest is ``<track run>.json``."""
    stem = Path(path).name.removesuffix(".csv")
    return next((stem.removesuffix(part) for part in MINI_PARTS if stem.endswith(part)), stem)


def read_runs(runs_dir: str | Path = DEFAULT_RUNS, *, mini: bool = False) -> list[dict]:
    """Measured rows of every ``*.csv`` run file under `runs_dir` (recursively, in path order):
    those of the main table, or with `mini` those of the mini track (each with its `track_run`)."""
    rows: list[dict] = []
    for path in sorted(Path(runs_dir).rglob("*.csv")):
        if is_mini(path) == mini:
            found = records(read_run(path), path)
            if mini:
                for r in found:
                    r["track_run"] = track_run(path)
            rows.extend(found)
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
    `value`, `spread`, `ci_low` and `ci_high` as floats (NaN when empty), `evidence` ("" for
    measured rows) and `options` (`options_of`). `path` names the file in error messages."""
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
        row["options"] = options_of(row)
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


def _config(r: dict) -> dict:
    try:
        config = json.loads(r["config"]) if r.get("config") else {}
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def _teacher(r: dict) -> str:
    """The teacher a speedup row names in its config."""
    return str(_config(r).get("teacher", ""))


def options_of(r: dict) -> str:
    """The sampler options of a measured row (``config.options``) as text; "" for the defaults and paper rows."""
    options = _config(r).get("options")
    return options_text(options) if isinstance(options, dict) else ""


def _eager(compiled: str) -> bool:
    return str(compiled) in ("", "False", "false", "none", "0")


def reference_like(e: dict) -> bool:
    """A timing the quality gate vouches for: its own reference or verified; a row older than the gate
    counts as its reference when it ran float32, eager, with default options."""
    if e["quality"]:
        return e["quality"] in (REFERENCE, VERIFIED)
    return e["options"] == "" and e["dtype"] == "float32" and _eager(e["compiled"])


def _teacher_exact(r: dict) -> bool:
    """A speedup row over the teacher at its exact decoding (rows older than the gate: its default options)."""
    c = _config(r)
    return bool(c["teacher_exact"]) if "teacher_exact" in c else not c.get("teacher_options")


def build(rows: list[dict]) -> list[dict]:
    """Leaderboard rows (numbers as floats, blanks as None) from published and measured rows.

    Args:
        rows: rows as `read_published` / `read_runs` return them.

    Returns:
        One dict per model x setting with the keys of `LEADERBOARD_COLUMNS`, sorted by FID
        rank within its comparison group (rows without FID last), then model and setting.
    """
    usable = [r for r in rows if r["status"] == OK and math.isfinite(r["value"]) and r["metric"] != CALIBRATION_MS]
    timing = [r for r in usable if r["metric"] == MS_PER_IMAGE and r["decode"] in ("on", "off")]
    quality = [r for r in usable if r["metric"] in (FID, IS) and not is_random_weights(r["weights"])]
    # measured speed-ups at one batch size (the best-throughput rows have none: no setting of their own),
    # over the teacher at its exact decoding
    ratios = [dict(r, teacher=_teacher(r)) for r in usable
              if r["metric"] == SPEEDUP and r["batch_size"] and r["decode"] in ("on", "off") and _teacher_exact(r)]

    times = _choose(timing, SETTING + ("decode",), by_n=False)
    scores = _choose(quality, QUALITY_KEY + ("metric",), by_n=True)
    speedups = _choose(ratios, SETTING + ("decode", "teacher"), by_n=False)

    board: dict[tuple, dict] = {}
    sources: dict[tuple, list[dict]] = {}
    for k, r in sorted(times.items(), key=lambda kr: kr[0][-1] != "off"):  # decode off first: its quality counts
        setting = k[:-1]
        entry = board.setdefault(setting, _blank(r))
        entry["ms_per_image_decode" if r["decode"] == "on" else "ms_per_image"] = r["value"]
        entry["quality"] = entry["quality"] or r.get("quality") or None
        sources.setdefault(setting, []).append(r)
    where = [SETTING.index(c) for c in QUALITY_KEY]
    for k, r in scores.items():
        qk, metric = k[:-1], k[-1]
        settings = [s for s in board if tuple(s[i] for i in where) == qk]
        if not settings:
            settings = [tuple(r[c] if c in QUALITY_KEY else "" for c in SETTING)]
            board[settings[0]] = _blank(r, timing=False)
        for s in settings:
            board[s][metric] = r["value"]
            if metric == FID:
                board[s].update(quality_n=int(float(r["n"])) if r["n"] else None, fid_reference=_reference(r),
                                fid_ci_low=_finite(r["ci_low"]), fid_ci_high=_finite(r["ci_high"]),
                                network=_config(r).get("network", ""))
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
    _add_ranks(board, QUALITY_KEY)
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


def _mini_usable(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == OK and math.isfinite(r["value"]) and r["metric"] != CALIBRATION_MS]


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
        Rows with the keys of `MINI_COLUMNS`, ranked by trained FID (see the module text).
    """
    usable = _mini_usable(rows)

    def role(r: dict) -> str:
        if is_random_weights(r["weights"]):
            return "random"
        return manifests.get(r["weights"], {}).get("role", "trained")

    quality = [dict(r, role=role(r)) for r in usable if r["metric"] in (FID, PRECISION, RECALL)]
    scores = _choose(quality, MINI_SETTING + ("role", "metric"), by_n=True)
    times = _choose([r for r in usable if r["metric"] == MS_PER_IMAGE and r["decode"] == "off"],
                    MINI_SETTING + ("batch_size",), by_n=False)
    board = {}
    width = len(MINI_SETTING)
    for setting in sorted({k[:width] for k in scores} | {k[:width] for k in times}):
        e = board[setting] = {c: None for c in MINI_COLUMNS}
        e.update(zip(MINI_SETTING, setting))
        for col, (r_role, metric) in {"fid": ("trained", FID), "precision": ("trained", PRECISION),
                                      "recall": ("trained", RECALL), "fid_half_steps": ("half", FID),
                                      "fid_random": ("random", FID), "precision_random": ("random", PRECISION),
                                      "recall_random": ("random", RECALL)}.items():
            r = scores.get(setting + (r_role, metric))
            e[col] = r["value"] if r else None
        fid, half = scores.get(setting + ("trained", FID)), scores.get(setting + ("half", FID))
        if fid:
            e["quality_n"] = int(float(fid["n"])) if fid["n"] else None
            e["fid_reference"], e["weights"], e["network"] = _reference(fid), fid["weights"], _config(fid).get(
                "network", "")
            e["fid_ci_low"], e["fid_ci_high"] = _finite(fid["ci_low"]), _finite(fid["ci_high"])
            e["train_steps"] = manifests.get(fid["weights"], {}).get("steps")
            e["quality"] = fid.get("quality") or None
        if half:
            e["half_steps"] = manifests.get(half["weights"], {}).get("steps")
        mine = sorted((int(float(k[width])), r) for k, r in times.items() if k[:width] == setting and k[width])
        for suffix, (bs, r) in (("", next(((b, r) for b, r in mine if b == 1), (None, None))),
                                ("_batched", mine[-1] if mine and mine[-1][0] > 1 else (None, None))):
            if r is None:
                continue
            c = _config(r)
            e[f"ms_per_image{suffix}"] = r["value"]
            e[f"ms_per_image{suffix}_ci_low"], e[f"ms_per_image{suffix}_ci_high"] = (_finite(r["ci_low"]),
                                                                                    _finite(r["ci_high"]))
            e[f"iterations_mean{suffix}"], e[f"iterations_max{suffix}"] = c.get("iterations_mean"), c.get(
                "iterations_max")
            e["quality"] = e["quality"] or r.get("quality") or None
            if suffix:
                e["batch_size"] = bs
        anyrow = next(r for r in usable if tuple(r[c] for c in MINI_SETTING) == setting)
        e["family"], e["params"], e["nfe"] = anyrow["family"], anyrow["params"], anyrow["nfe"]
    _add_ranks(board, MINI_SETTING)
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
    """
    usable = _mini_usable(rows)
    fids = {tuple(e[c] for c in MINI_SETTING): e["fid"] for e in mini}
    ratios = [r for r in usable if r["metric"] == SPEEDUP and r["batch_size"] and r["decode"] == "off"]
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
    for key, found in sorted(groups.items()):
        exact = _choose([r for r in found if _teacher_exact(r)], ("model",), by_n=False)
        verified = [r for r in found if _config(r).get("teacher_quality") in (REFERENCE, VERIFIED)]
        fastest = [min(verified, key=lambda r: float(_config(r)["teacher_ms_per_image"]))] if verified else []
        for basis, chosen in ((EXACT, list(exact.values())), (FASTEST, fastest)):
            for r in chosen:
                c = _config(r)
                out.append(entry(r, basis, c["teacher"], options_text(c.get("teacher_options") or {}), r["value"],
                                 _finite(r["ci_low"]), _finite(r["ci_high"]), c.get("fast_ms_per_image"),
                                 c.get("teacher_ms_per_image"), c.get("teacher_quality")))
    measured = {(e["track_run"], e["model"], e["dtype"]) for e in out}
    times = _choose([r for r in usable if r["metric"] == MS_PER_IMAGE and r["decode"] == "off"],
                    MINI_SETTING + ("batch_size",), by_n=False)
    for (run, model, dtype, options, bs), r in sorted(times.items()):
        teacher = teacher_of(model)
        t = times.get((run, teacher, dtype, "", bs)) if teacher else None
        if t is not None and (run, model, dtype) not in measured:
            out.append(entry(r, EXACT, teacher, "", t["value"] / r["value"], None, None, r["value"], t["value"],
                             t.get("quality")))
    return sorted(out, key=lambda e: (e["model"], e["dtype"], e["options"], _num(e["batch_size"]), e["basis"],
                                      e["track_run"]))


def _reference(r: dict) -> str:
    """What a FID was measured against, from the row's config: ``adm VIRTUAL_imagenet256_labeled.npz``.
    FIDs against different references (or few samples) do not compare: the column says so."""
    config = _config(r)
    return " ".join(str(config[k]) for k in ("mode", "reference") if config.get(k))


def _blank(r: dict, timing: bool = True) -> dict:
    entry = {c: None for c in LEADERBOARD_COLUMNS}
    for c in SETTING:
        entry[c] = r[c] if timing or c in QUALITY_KEY else ""
    entry["family"], entry["params"] = r["family"], r["params"]
    return entry


def _add_speedups(board: dict[tuple, dict], measured: dict[tuple, dict]) -> None:
    """`teacher` and the speed-up columns: the measured speedup row of the setting where one was
    chosen, else the ratio of the teacher's ms per image (at its default options) and the row's (no interval)."""
    for s, entry in board.items():
        teacher = teacher_of(entry["model"])
        if teacher is None:
            continue
        peers = sorted(t for t in board if t[0] == teacher and t[1] == s[1] and t[3:-1] == s[3:-1] and t[-1] == "")
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


def resolved_ranks(values: dict, z: float = 1.96) -> dict:
    """key -> rank, from key -> (value, ci_low, ci_high) (bounds None without an interval): one more
    than the number of values resolved lower, where a and b are resolved when
    |a - b| > z sqrt(se_a^2 + se_b^2), se = (ci_high - ci_low) / (2 z).

    >>> resolved_ranks({"a": (49.0, 45.1, 52.9), "b": (51.0, 47.2, 54.8), "c": (97.3, 90.0, 104.6)})
    {'a': 1, 'b': 1, 'c': 3}
    """
    se = {k: 0.0 if lo is None or hi is None else (hi - lo) / (2 * z) for k, (_, lo, hi) in values.items()}
    return {k: 1 + sum(1 for j, (w, _, _) in values.items()
                       if j != k and w < v and v - w > z * math.sqrt(se[k] ** 2 + se[j] ** 2))
            for k, (v, _, _) in values.items()}


def _group(e: dict) -> tuple:
    """The FIDs an entry's FID compares with: equal N, reference (mode and file) and network."""
    return (e["quality_n"] or 0, e["fid_reference"] or "", e.get("network") or "")


def _add_ranks(board: dict, key: tuple) -> None:
    """`fid_rank` over the distinct `key`s with a FID, within each `_group`, by `resolved_ranks`."""
    groups: dict[tuple, dict] = {}
    for e in board.values():
        if e["fid"] is not None:
            groups.setdefault(_group(e), {})[tuple(e[c] for c in key)] = (e["fid"], e["fid_ci_low"], e["fid_ci_high"])
    ranks = {(g, k): r for g, values in groups.items() for k, r in resolved_ranks(values).items()}
    for e in board.values():
        if e["fid"] is not None:
            e["fid_rank"] = ranks[(_group(e), tuple(e[c] for c in key))]


def _num(s) -> float:
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.inf


def _sort_key(e: dict) -> tuple:
    """Ranked entries first, group by group (the most samples first), by rank; then model and setting."""
    ranked = e["fid_rank"] is not None
    n, reference, network = _group(e) if ranked else (0, "", "")
    return (not ranked, -n, reference, network, e["fid_rank"] or 0, e["model"], e["source"], _num(e["nfe"]), e["nfe"],
            e["device"], e["device_name"], e["backend"], e["dtype"], e["compiled"], _num(e["batch_size"]),
            e["batch_size"], e["options"])


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


def _with_interval(col: str, e: dict, decimals: dict, say_missing: bool) -> str:
    """``49.04 [45.10, 52.90]``; without an interval the value alone, or ``2.39 (no interval)``."""
    value = _cell(col, e[col], decimals)
    low, high = e[f"{col}_ci_low"], e[f"{col}_ci_high"]
    if not value:
        return ""
    if low is None or high is None:
        return f"{value} (no interval)" if say_missing else value
    return f"{value} [{_cell(col, low, decimals)}, {_cell(col, high, decimals)}]"


def _table_markdown(board: list[dict], columns: tuple, decimals: dict, intervals: dict[str, bool]) -> str:
    """The table in Markdown: the columns of `intervals` with their ``_ci_low``/``_ci_high`` in one cell."""
    shown = tuple(c for c in columns if not any(c in (f"{i}_ci_low", f"{i}_ci_high") for i in intervals))
    numeric = set(decimals) | {"fid_rank", "params", "nfe", "batch_size", "quality_n", "train_steps", "half_steps",
                               "iterations_max", "iterations_max_batched"}
    lines = ["| " + " | ".join(shown) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in shown) + "|"]
    for e in board:
        cells = [(_with_interval(c, e, decimals, intervals[c]) if c in intervals else _cell(c, e[c], decimals))
                 .replace("|", "\\|") for c in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(board: list[dict]) -> str:
    """The leaderboard as CSV text (``\\n`` line ends, fixed decimals)."""
    return _table_csv(board, LEADERBOARD_COLUMNS, _DECIMALS)


def to_markdown(board: list[dict]) -> str:
    """The leaderboard as a Markdown table: the CSV's cells, each interval beside its value."""
    return _table_markdown(board, LEADERBOARD_COLUMNS, _DECIMALS, _INTERVALS)


def pareto_points(board: list[dict]) -> list[dict]:
    """Points of the Pareto plot: FID against generator-only ms per image.

    Each point is the fastest batch size of one (model, source, nfe, device, device_name,
    backend, dtype, compiled, options). Kinds: ``paper`` (both figures published),
    ``measured`` (both measured here with real weights, for the same setting),
    ``measured-time`` (measured timing, the paper's FID for the same model id and NFE, or any
    NFE where the paper prints none, as for autoregressive flows: random-weight runs time the
    architecture, not its quality); only for a timing that is its own reference or verified
    (`reference_like`), since a fast setting (bf16, Jacobi decoding) need not keep the paper's FID.
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
        elif e["source"] == "measured" and reference_like(e) and (e["model"], e["nfe"]) in paper_fid:
            fid, kind = paper_fid[(e["model"], e["nfe"])], "measured-time"
        elif e["source"] == "measured" and reference_like(e) and e["model"] in paper_fid_any_nfe:
            fid, kind = paper_fid_any_nfe[e["model"]], "measured-time"
        else:
            continue
        k = (e["model"], e["source"], e["nfe"], e["device"], e["device_name"], e["backend"], e["dtype"], e["compiled"],
             e["options"])
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
             "measured-time": ("left", "measured time (reference or verified setting), paper FID")}
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
        speedups = build_mini_speedups(mini_rows, mini)
        for name, table, columns, decimals, intervals in (
                ("mini", mini, MINI_COLUMNS, _MINI_DECIMALS, _MINI_INTERVALS),
                ("mini_speedup", speedups, MINI_SPEEDUP_COLUMNS, _MINI_SPEEDUP_DECIMALS, _MINI_SPEEDUP_INTERVALS)):
            stem = out_dir / f"leaderboard-{name.replace('_', '-')}"
            paths[f"{name}_csv"], paths[f"{name}_md"] = stem.with_suffix(".csv"), stem.with_suffix(".md")
            atomic_write(paths[f"{name}_csv"], _table_csv(table, columns, decimals))
            atomic_write(paths[f"{name}_md"], _table_markdown(table, columns, decimals, intervals))
    if plot:
        paths["png"] = out_dir / "pareto.png"
        plot_pareto(board, paths["png"])
    return paths
