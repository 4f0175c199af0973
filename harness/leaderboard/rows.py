"""Reading the leaderboard's inputs: published rows, run files, track manifests, numeric cells.

Inputs are `results/published.csv` (paper figures, the results schema plus an `evidence`
column: ``verified`` or ``secondary``) and every run file under `results/runs/`, the curated
runs that are committed. A user's own runs (`nfebench bench` writes them to the git-ignored
`results/local/`) enter only when asked. Each row becomes a dict of text, numbers canonical
(`text`: 8, 8.0 and "8" key alike), with `value`, `spread`, `ci_low` and `ci_high` as floats.

Run files whose name contains ``mini`` are the mini track's (`harness.track`): `read_runs`
reads them apart (``mini=True``), each row with the track run it belongs to, and
`read_manifests` reads which weights are the trained, the half-way and the random ones.

Example::

    rows = read_published() + read_runs()           # the main table's rows
    mini = read_runs(mini=True)                     # the mini track's, each with its track_run
    {r["model"] for r in rows if r["metric"] == "fid"}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from adapters.api.errors import InputError
from adapters.api.sampler import RANDOM_INIT
from harness.results import CALIBRATION_MS, OK, read_run
from harness.settings import options_text

EVIDENCE = ("verified", "secondary")

# Columns whose numbers are canonicalised by `text`, so 8, 8.0 and "8" key alike.
NUMERIC_CELLS = ("schema_version", "params", "nfe", "batch_size", "guidance", "seed", "n")
# Columns read as floats (NaN when empty).
FLOAT_CELLS = ("value", "spread", "ci_low", "ci_high")
SETTING = ("model", "source", "nfe", "device", "device_name", "backend", "dtype", "compiled", "batch_size", "options")
# What makes the samples: a FID belongs to these and holds for every device and batch size.
QUALITY_KEY = ("model", "source", "nfe", "backend", "dtype", "compiled", "options")

DEFAULT_PUBLISHED = Path("results/published.csv")
DEFAULT_RUNS = Path("results/runs")  # curated runs, committed
DEFAULT_LOCAL = Path("results/local")  # a user's own runs (nfebench bench's default), git-ignored
DEFAULT_OUT = Path("results")

MINI = "mini"
# A mini track run's files: <track run>-<part>.csv (`harness.track`), longest part first.
MINI_PARTS = ("-bench-bf16", "-bench", "-sweep", "-trained", "-half", "-random")
# A row of the mini tables; each track run stands alone (its own trained weights). It times eager torch only.
MINI_SETTING = ("track_run", "model", "dtype", "options")


def text(value) -> str:
    """A numeric cell as canonical text: ``8``, ``8.0`` and ``"8"`` all become ``"8"``; NaN and
    None become ``""``; words stay as they are.

    Files written by different tools (or read by pandas with different column dtypes) then
    agree on setting keys.

    >>> [text(8), text(8.0), text("8.0"), text("1.50"), text(float("nan")), text("adm")]
    ['8', '8', '8', '1.5', '', 'adm']
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


def sort_number(s) -> float:
    """A cell as a number to sort by; a blank or a word sorts after every number."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.inf


def finite(x: float) -> float | None:
    """A float cell for a table: None where it is NaN or infinite (printed blank)."""
    return x if math.isfinite(x) else None


def is_random_weights(weights: str) -> bool:
    """True for weights measured at random init, alone or combined (``random-init+vae:sha256:...``)."""
    return RANDOM_INIT in str(weights)


def usable(rows: list[dict]) -> list[dict]:
    """The rows that count: status ``ok``, a finite value, and not the calibration loop's time.
    oom/error rows stay in the run files."""
    return [r for r in rows if r["status"] == OK and math.isfinite(r["value"]) and r["metric"] != CALIBRATION_MS]


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


def config_of(r: dict) -> dict:
    """A row's ``config`` cell as a dict; {} where it is empty or not a JSON object."""
    try:
        config = json.loads(r["config"]) if r.get("config") else {}
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def options_of(r: dict) -> str:
    """The sampler options of a measured row (``config.options``) as text; "" for the defaults and paper rows."""
    options = config_of(r).get("options")
    return options_text(options) if isinstance(options, dict) else ""


def setting_name(model: str, options: str) -> str:
    """A setting's name from its options as text (`options_of`), as `harness.settings.label` names it:
    ``tarflow-mini[decoding=jacobi,jacobi_tol=0.001]``, or the model id for its defaults."""
    return f"{model}[{options}]" if options else model


def is_eager(compiled) -> bool:
    """True for a row timed without compilation: a ``compiled`` cell of ``False``, ``none`` or blank."""
    return str(compiled) in ("", "False", "false", "none", "0")


def teacher_named(r: dict) -> str:
    """The teacher a speedup row names in its config."""
    return str(config_of(r).get("teacher", ""))


def teacher_exact(r: dict) -> bool:
    """A speedup row over the teacher at its exact decoding (rows older than the gate: its default options)."""
    c = config_of(r)
    return bool(c["teacher_exact"]) if "teacher_exact" in c else not c.get("teacher_options")


def reference_of(r: dict) -> str:
    """What a FID was measured against, from the row's config: ``adm VIRTUAL_imagenet256_labeled.npz``.
    FIDs against different references (or few samples) do not compare: the column says so."""
    config = config_of(r)
    return " ".join(str(config[k]) for k in ("mode", "reference") if config.get(k))


def fid_cells(r: dict) -> dict:
    """A FID row's cells beside its value: its interval (None without one), N (``quality_n``), what it
    was measured against (``fid_reference``) and its feature ``network``, the last three the FIDs it
    compares with (`harness.leaderboard.choice.comparison_group`)."""
    return {"fid_ci_low": finite(r["ci_low"]), "fid_ci_high": finite(r["ci_high"]),
            "quality_n": int(float(r["n"])) if r["n"] else None, "fid_reference": reference_of(r),
            "network": config_of(r).get("network", "")}
