"""The committed record: the curated run files, leaderboard CSVs, published rows and track
manifests under ``results/``, and every number in them with the kind of quantity it is.

Example::

    record = Record(Path("."))
    record.bench_run("cpu")           # results/runs/bench-cpu-...csv, the latest curated main job
    len(record.facts)                 # every committed number, e.g. Fact("ms", 336.18...)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from adapters.api.errors import InputError
from harness.results import read_run

# kind of each stored value, so a quote is compared only with values of its own unit
METRIC_KINDS = {"ms_per_batch": "ms", "ms_per_image": "ms", "calibration_ms": "ms", "compile_ms": "ms",
                "images_per_s": "rate", "images_per_s_per_chip": "rate", "speedup": "ratio",
                "frac_matmul_peak": "fraction", "mfu": "fraction", "peak_mem_mb": "mb"}
QUALITY = ("fid", "is", "sfid", "kid", "fd_dinov2", "precision", "recall", "density", "coverage")
CONFIG_KINDS = {"peak_flop_per_s": "flops", "matmul_peak_flops": "flops", "cv": "fraction",
                "fast_ms_per_image": "ms", "teacher_ms_per_image": "ms"}


@dataclass(frozen=True)
class Fact:
    """One committed (or derived) number and the kind of quantity it is (``ms``, ``ratio``, ...)."""

    kind: str
    value: float


def _kind_of_column(name: str) -> str | None:
    """The kind of a leaderboard CSV column's numbers, or None for counts, ranks and labels."""
    if "speedup" in name:
        return "ratio"
    if "ms_per_image" in name:
        return "ms"
    quality = name.removeprefix("teacher_").startswith(("fid", "precision", "recall")) or name == "is"
    return "quality" if quality and name not in ("fid_rank", "fid_reference") else None


def as_number(text: str) -> float | None:
    """`text` as a finite float, or None (an empty cell, a label, NaN)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class Record:
    """The committed results under ``root/results``, read once.

    Example: ``Record(Path(".")).bench_run("cpu")`` is the latest curated run of the ``cpu`` preset.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.results = self.root / "results"
        if not (self.results / "runs").is_dir():
            raise InputError(f"{self.root} holds no results/runs/: run `nfebench docs` from the repository root "
                             f"or give --root")

    def path(self, name: str) -> Path:
        return self.results / name

    def csv(self, name: str):
        """A committed CSV (a leaderboard table, published.csv) as strings, exactly as written."""
        import pandas as pd

        path = self.path(name)
        if not path.is_file():
            raise InputError(f"{path} does not exist: run `nfebench leaderboard` first")
        return pd.read_csv(path, dtype=str, keep_default_na=False)

    def bench_run(self, preset: str) -> Path:
        """The latest curated run file of a bench preset (run ids sort by their UTC start)."""
        found = sorted(self.path("runs").glob(f"bench-{preset}-*.csv"))
        if not found:
            raise InputError(f"no curated run of the {preset!r} preset in {self.path('runs')}")
        return found[-1]

    def track_manifest(self, track: str = "mini", budget: str = "full") -> tuple[Path, dict]:
        """The latest committed manifest of a track run at a budget."""
        found = sorted(self.path("runs").glob(f"{track}-{budget}-*.json"))
        if not found:
            raise InputError(f"no committed {track} track manifest ({track}-{budget}-*.json) in {self.path('runs')}")
        return found[-1], json.loads(found[-1].read_text())

    @cached_property
    def facts(self) -> list[Fact]:
        """Every number of the record with its kind: run rows (value, interval, timing percentiles,
        peaks), every leaderboard cell, published rows, track manifests (FIDs, wall time, CRM, IGM)."""
        out: list[Fact] = []
        for path in sorted(self.path("runs").glob("*.csv")) + [self.path("published.csv")]:
            if not path.is_file():
                continue
            df = read_run(path) if path.name != "published.csv" else self.csv(path.name)
            for r in df.to_dict("records"):
                kind = "quality" if r["metric"] in QUALITY else METRIC_KINDS.get(r["metric"])
                config = json.loads(r["config"]) if r.get("config") else {}
                for key in ("value", "ci_low", "ci_high", "p50", "p90", "p99"):
                    v = as_number(r.get(key, config.get(key)))
                    if kind and v is not None:
                        out.append(Fact(kind, v))
                out += [Fact(CONFIG_KINDS[k], v) for k, v in config.items()
                        if k in CONFIG_KINDS and as_number(v) is not None]
        for path in sorted(self.results.glob("leaderboard*.csv")):
            df = self.csv(path.name)
            for col in df.columns:
                kind = _kind_of_column(col)
                out += [Fact(kind, v) for v in map(as_number, df[col]) if kind and v is not None]
        for path in sorted(self.path("runs").glob("*.json")):
            manifest = json.loads(path.read_text())
            out.append(Fact("s", float(manifest.get("wall_seconds", "nan"))))
            out.append(Fact("s", float((manifest.get("sweep") or {}).get("wall_seconds", "nan"))))  # format 3
            for group in ("fids", "setting_fids"):
                out += [Fact("quality", float(v)) for v in manifest.get(group, {}).values()]
            plan = manifest.get("gs_jacobi", {})
            out += [Fact("crm", float(v)) for v in plan.get("crm", [])]
            out += [Fact("igm", float(v)) for block in plan.get("igm", []) for v in block.values()]
        return [f for f in out if math.isfinite(f.value)]
