"""The results schema: tidy rows (one measurement per row), provenance, atomic run files.

A run file is a CSV under ``results/runs/``; every row carries the provenance of the
process that measured it, so rows can be pooled across files without losing where they
came from. Files are rewritten whole through a temporary file and a rename after every
added row, so an interrupted run leaves every finished row and never a half-written file.

Schema history (``schema_version`` column):
  1: first version.
  2: ``ci_low``, ``ci_high`` (a 95% interval in the unit of ``value``), ``stable`` (a timing
     whose interval met its target) and ``quality`` (a fast setting checked against the
     reference setting: verified, unverified or failed). Version-1 files read with these
     columns empty. New metrics: ``speedup`` (a pair timed in alternating rounds) and
     ``frac_matmul_peak``; timing rows keep ``cv``, ``p50``, ``p90``, ``p99`` and ``stop`` in
     ``config``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import secrets
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from adapters.api.errors import InputError
from adapters.api.files import atomic_write, atomic_write_npz, file_digest  # noqa: F401  (re-exported)
from harness import __version__

SCHEMA_VERSION = 2

# Metric names: use these constants, never retype the strings.
MS_PER_BATCH = "ms_per_batch"
MS_PER_IMAGE = "ms_per_image"
IMAGES_PER_S = "images_per_s"
IMAGES_PER_S_PER_CHIP = "images_per_s_per_chip"  # JAX rows: the batch is split over `chips` devices
COMPILE_MS = "compile_ms"  # JAX rows: lowering and XLA compilation of one point, apart from its timings
PEAK_MEM_MB = "peak_mem_mb"
MFU = "mfu"
# Achieved FLOP/s over the matmul FLOP/s the same run measured on its device (its calibration
# workload, in the run's dtype): how far a point is from what this machine can do, on any device.
FRAC_MATMUL_PEAK = "frac_matmul_peak"
# A fast model's speed over the model it is compared with (`harness.pairs`), timed in alternating
# rounds: the teacher's median ms per image over the fast model's; `config.teacher` names it.
SPEEDUP = "speedup"
FID = "fid"
IS = "is"
SFID = "sfid"
PRECISION = "precision"
RECALL = "recall"
DENSITY = "density"  # Naeem et al. 2020, on the precision/recall manifolds
COVERAGE = "coverage"
KID = "kid"  # value: mean over subsets; spread: std over subsets
FD_DINOV2 = "fd_dinov2"  # Frechet distance of DINOv2 ViT-L/14 features (EDM2)
# Each bench run times one fixed workload on its machine, so timings compare as ratios to it.
CALIBRATION_MS = "calibration_ms"
# The quality gate (`harness.quality`): a setting's samples against its reference setting's, on the
# same noise and labels, in model space (largest and mean absolute difference over all entries).
MAX_ABS_DEVIATION = "max_abs_deviation"
MEAN_ABS_DEVIATION = "mean_abs_deviation"
QUALITY_METRICS = (FID, IS, SFID, PRECISION, RECALL, DENSITY, COVERAGE, KID, FD_DINOV2)
# The costs of a sweep's quality pass (`harness.sweep`), one row each per setting: images per second
# through sampling and decoding, and through the feature networks (Inception, DINOv2).
SAMPLE_IMAGES_PER_S = "sample_images_per_s"
FEATURE_IMAGES_PER_S = "feature_images_per_s"

# Row status: "ok" rows have a value; "oom" and "error" rows record a point that failed.
OK, OOM, ERROR = "ok", "oom", "error"

PROVENANCE_COLUMNS = ("schema_version", "run_id", "created", "git_sha", "nfebench_version", "versions")
SETTING_COLUMNS = (
    "model", "family", "params", "nfe", "backend", "device", "device_name", "dtype", "compiled",
    "batch_size", "decode", "guidance", "seed", "weights",
)
MEASUREMENT_COLUMNS = ("metric", "value", "spread", "n", "ci_low", "ci_high", "stable", "quality", "status", "source",
                       "citation", "notes", "config")
COLUMNS = PROVENANCE_COLUMNS + SETTING_COLUMNS + MEASUREMENT_COLUMNS
# Columns each schema version added; a file of an older version is read with them empty.
ADDED_IN = {2: ("ci_low", "ci_high", "stable", "quality")}
NUMERIC_COLUMNS = ("value", "spread", "ci_low", "ci_high")  # empty cells read as NaN

# What a row's value may be, per metric: (lowest, highest), None for no bound. Every row read is
# held to it (`read_run`); a metric not named here (a third party's) must only be finite.
VALUE_RANGES: dict[str, tuple[float | None, float | None]] = {
    **{m: (0.0, None) for m in (MS_PER_BATCH, MS_PER_IMAGE, IMAGES_PER_S, IMAGES_PER_S_PER_CHIP, COMPILE_MS,
                                PEAK_MEM_MB, MFU, FRAC_MATMUL_PEAK, CALIBRATION_MS, FID, SFID, FD_DINOV2, DENSITY,
                                MAX_ABS_DEVIATION, MEAN_ABS_DEVIATION, SAMPLE_IMAGES_PER_S, FEATURE_IMAGES_PER_S)},
    SPEEDUP: (0.0, None),
    IS: (1.0, None),  # exp of a mean KL divergence
    **{m: (0.0, 1.0) for m in (PRECISION, RECALL, COVERAGE)},
    KID: (None, None),  # unbiased: small negative values are valid
}
STATUSES = (OK, OOM, ERROR)

# The `quality` column: how a fast setting's samples compare with the reference setting's
# (`harness.quality`); REFERENCE marks the reference setting itself (float32, eager, exact decoding).
VERIFIED, UNVERIFIED, FAILED, REFERENCE = "verified", "unverified", "failed", "reference"

_VERSIONED_PACKAGES = ("torch", "numpy", "diffusers", "jax", "torch-fidelity", "clean-fid", "pyperf")


def git_sha(repo: Path | None = None) -> str:
    """HEAD of the checkout nfebench runs from, with ``-dirty`` if it has local changes;
    ``unknown`` outside a git checkout (an installed wheel)."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def package_versions() -> str:
    """``python=3.11.7;torch=2.14.1;...`` for the packages that change numbers or timings."""
    parts = [f"python={platform.python_version()}"]
    for name in _VERSIONED_PACKAGES:
        try:
            parts.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ";".join(parts)


def new_provenance() -> dict[str, Any]:
    """Provenance columns for a new run: id, UTC time, git hash, versions."""
    now = datetime.now(timezone.utc)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3),
        "created": now.isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "nfebench_version": __version__,
        "versions": package_versions(),
    }


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def rows_to_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _cell(row.get(k)) for k in COLUMNS})
    return buf.getvalue()


class RunFile:
    """Rows of one run, saved atomically after every `add`.

    Example::

        run = RunFile("results/runs/cpu-demo.csv")
        run.add(model="sit-b2", metric=MS_PER_IMAGE, value=12.5, n=10, ...)
    """

    def __init__(self, path: str | Path, provenance: Mapping[str, Any] | None = None, *, append: bool = False):
        """`append`: keep the rows a file at `path` already holds (each with its own
        provenance) and add after them; otherwise the file is started afresh."""
        self.path = Path(path)
        self.provenance = dict(provenance or new_provenance())
        self.rows: list[dict[str, Any]] = []
        if append and self.path.exists():
            read_run(self.path)  # refuses a file that is not a run file before it is rewritten
            with open(self.path, newline="", encoding="utf-8") as f:
                self.rows = list(csv.DictReader(f))

    def add(self, **row: Any) -> dict[str, Any]:
        """Append a row (its provenance filled in) and rewrite the file."""
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"not result columns: {sorted(unknown)}")
        full = {"status": OK, "source": "measured", **self.provenance, **row}
        self.rows.append(full)
        self.flush()
        return full

    def flush(self) -> None:
        """Write every row so far (atomically: a reader never sees half a file)."""
        atomic_write(self.path, rows_to_csv(self.rows))


def read_run(path: str | Path):
    """A run file as a pandas DataFrame, every row checked (`check_rows`); a file that is not a
    run file, or holds an impossible row, fails with one InputError naming the file, the line,
    the field, what was found and what was expected."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"run file {path} does not exist")
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in NUMERIC_COLUMNS})
    except Exception as exc:
        raise InputError(f"run file {path} is not a readable CSV: {exc}") from exc
    if "schema_version" in df.columns and not df.empty:
        versions = pd.to_numeric(df["schema_version"], errors="coerce")
        bad = versions.isna() | ~versions.isin(range(1, SCHEMA_VERSION + 1))
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise InputError(f"run file {path} line {i + 2}: schema_version is {df['schema_version'].iloc[i]!r}, "
                             f"expected one of 1 to {SCHEMA_VERSION} (a newer nfebench may have written it)")
        oldest = int(versions.min())
        for version, added in ADDED_IN.items():
            for c in added:
                if oldest < version and c not in df.columns:
                    df[c] = float("nan") if c in NUMERIC_COLUMNS else ""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"run file {path} lacks the result columns {', '.join(missing)}")
    if df.empty:
        raise InputError(f"run file {path} holds no rows")
    check_rows(df, path)
    return df


def _row_problem(r: Mapping[str, Any]) -> tuple[str, Any, str] | None:
    """(field, found, what it must be) of the first thing wrong with one row, or None."""
    for c in NUMERIC_COLUMNS:
        if not isinstance(r[c], float):  # a cell pandas could not read as a number
            return c, r[c], "a number or empty"
    if r["status"] not in STATUSES:
        return "status", r["status"], f"one of {', '.join(STATUSES)}"
    value, low, high = r["value"], r["ci_low"], r["ci_high"]
    if r["status"] != OK:
        return None  # an oom/error row records a failure: it has no value to check
    if not math.isfinite(value):
        return "value", value, f"a finite numeric value (status {OK!r} rows carry a measurement)"
    lowest, highest = VALUE_RANGES.get(r["metric"], (None, None))
    if (lowest is not None and value < lowest) or (highest is not None and value > highest):
        bounds = (f"at least {lowest}" if highest is None else f"at most {highest}" if lowest is None
                  else f"between {lowest} and {highest}")
        return "value", value, f"{bounds} for {r['metric']}"
    for c, bound in (("spread", r["spread"]), ("ci_low", low), ("ci_high", high)):
        if not math.isnan(bound) and not math.isfinite(bound):
            return c, bound, "a finite number or empty"
    if not math.isnan(r["spread"]) and r["spread"] < 0:
        return "spread", r["spread"], "at least 0"
    if not math.isnan(low) and low > value:
        return "ci_low", low, f"at most the value {value} (an interval holds its estimate)"
    if not math.isnan(high) and high < value:
        return "ci_high", high, f"at least the value {value} (an interval holds its estimate)"
    return None


def check_rows(df, path: str | Path) -> None:
    """Hold every row of a run file to the schema: a known status; for ``ok`` rows a finite value
    in its metric's range (`VALUE_RANGES`: no negative time or FID, precision in [0, 1]),
    finite spread and bounds, and ``ci_low <= value <= ci_high`` where an interval is given."""
    for i, r in enumerate(df[["metric", "status", *NUMERIC_COLUMNS, "model"]].to_dict("records")):
        problem = _row_problem(r)
        if problem is not None:
            field, found, expected = problem
            raise InputError(f"run file {path} line {i + 2} ({r['model']} {r['metric']}): {field} must be "
                             f"{expected}, got {found!r}")
