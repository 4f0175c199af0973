"""A resumable evaluation on disk: a manifest, one file per finished shard, the result.

Layout of ``--work-dir DIR`` (only rank 0 reads or writes it, so it needs no shared file
system)::

    DIR/manifest.json    every setting that changes the result; a rerun must match it
    DIR/shards/<s>.npz   shard s (samples [s*S, (s+1)*S)): start, count, and the per-image features
                         the metrics need (float32, one array per feature: ``pool`` (Inception
                         pool_3), ``spatial`` (sFID), ``dinov2`` (FD-DINOv2)), and uint8 images +
                         labels when samples are saved
    DIR/stats.npz        the merged statistics (nfebench format; `harness.metrics.fid`), when
                         pool_3 was among them
    DIR/result.json      the metric values: a finished run, reported again without work

Every file is written through a temporary file and a rename (`harness.results.atomic_write`),
so a process killed at any moment leaves whole shards or none; a rerun of the same command
does the missing shards only.

Example::

    wd = WorkDir("runs/rf-fid50k", {"model": "sit-b2", "num_samples": 50000, ...})
    wd.open()                       # refuses a directory started with other settings
    done = wd.done(shard_ranges(50000, 1000))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from adapters.api.errors import InputError
from harness.results import atomic_write, atomic_write_npz

FORMAT = "nfebench-workdir-2"  # 2: features per name (DINOv2 too), metric options in the manifest
# Samples per shard: the unit of work per rank, of resumption and of the merge order. Big
# enough that a shard file (pool_3 + sFID + DINOv2 features, 20 MB) and one exchange per shard cost
# little next to sampling; small enough that a pre-empted run loses minutes, not hours.
DEFAULT_SHARD_SIZE = 1000
MANIFEST, RESULT, STATS, SHARDS = "manifest.json", "result.json", "stats.npz", "shards"


def shard_ranges(num_samples: int, shard_size: int) -> list[range]:
    """Sample indices of each shard: fixed by N and the shard size alone, never by the number
    of processes or the batch size.

    Example::

        >>> shard_ranges(5, 2)
        [range(0, 2), range(2, 4), range(4, 5)]
    """
    if shard_size < 1:
        raise InputError(f"--shard-size must be a positive integer, got {shard_size}")
    return [range(lo, min(lo + shard_size, num_samples)) for lo in range(0, num_samples, shard_size)]


def _json_ready(manifest: dict) -> dict:
    """The manifest as JSON reads it back (tuples become lists), so comparisons are like for like."""
    return json.loads(json.dumps(manifest, sort_keys=True))


class WorkDir:
    """Manifest, shard files and result of one evaluation in a directory."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = _json_ready({"format": FORMAT, **manifest})

    def open(self) -> None:
        """Create the directory and its manifest, or check that an existing one matches.

        A mismatch is an InputError naming each differing setting with both values."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"--work-dir {self.path} exists and is not a directory")
        file = self.path / MANIFEST
        if file.exists():
            try:
                old = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"--work-dir {self.path}: {MANIFEST} is unreadable ({exc}); "
                                 f"use a new --work-dir") from exc
            if old != self.manifest:
                keys = sorted(set(old) | set(self.manifest))
                diffs = [f"{k}: {old.get(k, '(absent)')!r} there, {self.manifest.get(k, '(absent)')!r} now"
                         for k in keys if old.get(k) != self.manifest.get(k)]
                raise InputError(f"--work-dir {self.path} holds a run with other settings ({'; '.join(diffs)}); "
                                 f"rerun with the original arguments to resume it, or use a new --work-dir")
            return
        if self.path.exists() and any(self.path.iterdir()):
            raise InputError(f"--work-dir {self.path} is not empty and has no {MANIFEST}; use an empty or new "
                             f"directory")
        (self.path / SHARDS).mkdir(parents=True, exist_ok=True)
        atomic_write(file, json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")

    def shard_path(self, s: int) -> Path:
        return self.path / SHARDS / f"{s:06d}.npz"

    def done(self, shards: list[range]) -> list[bool]:
        """Which shards have a complete file (readable, with the expected first index and count)."""
        out = []
        for s, idx in enumerate(shards):
            path = self.shard_path(s)
            ok = False
            if path.is_file():
                try:
                    with np.load(path, allow_pickle=False) as data:
                        ok = (int(data["start"]), int(data["count"])) == (idx.start, len(idx))
                except Exception:  # a damaged file is redone, not trusted
                    ok = False
            out.append(ok)
        return out

    def write_shard(self, s: int, arrays: dict[str, np.ndarray]) -> None:
        atomic_write_npz(self.shard_path(s), **arrays)

    def read_shard(self, s: int) -> dict[str, np.ndarray]:
        with np.load(self.shard_path(s), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def result(self) -> dict | None:
        """The recorded result of a finished run, or None."""
        file = self.path / RESULT
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None

    def write_result(self, result: dict) -> None:
        atomic_write(self.path / RESULT, json.dumps(result, indent=1, sort_keys=True) + "\n")

    @property
    def stats_path(self) -> Path:
        return self.path / STATS
