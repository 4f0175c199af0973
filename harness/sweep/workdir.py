"""A sweep on disk: its manifest, one entry per setting, the calibration rows of each process.

Layout of ``--work-dir DIR``::

    DIR/sweep.json                 the sweep's id, what every run of it must share (`fixed`: models,
                                   weights, seed, N, reference, metrics, timing budget...), each
                                   model's baseline setting, and the run files it writes
    DIR/settings/<key>/setting.json   the setting (model, options, label) and its place in the sweep
    DIR/settings/<key>/eval/       its quality pass: `harness.workdir.WorkDir` of `evaluate_sampler`
                                   (manifest, one file per finished shard, the result)
    DIR/settings/<key>/throughput.json  the pass's sampling and feature time so far (`Throughput`)
    DIR/settings/<key>/quality.json     its quality and cost rows, once its pass is done
    DIR/settings/<key>/timing.json      its timing and ratio rows and pyperf benchmarks, once timed
    DIR/calibration.json           the calibration rows (start and end) of each process that timed
                                   settings and ran to its end

A setting's ``<key>`` is its label made file-safe plus a digest of the label, so any option
value names a folder. Every file is written through a temporary file and a rename
(`harness.results.atomic_write`): a process killed at any moment leaves whole files or none,
and a rerun does what is missing: the quality passes resume shard by shard, settings with
rows are reported again from them, bit for bit.

Example::

    sd = SweepDir("runs/mini-sweep", fixed={"models": ["rf-mini"], "seed": 0, ...})
    stored = sd.check()                 # None for a new sweep; refuses one of other settings
    sd.create("20261201T120000Z-ab12cd", {"rf-mini": {}}, outputs=["sweep.csv"])
    entry = sd.register(setting)        # settings/<key>/setting.json
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adapters.api.errors import InputError
from harness.results import atomic_write
from harness.settings import json_options, label

FORMAT = "nfebench-sweep-1"
MANIFEST, SETTINGS, CALIBRATION = "sweep.json", "settings", "calibration.json"


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is unreadable ({exc}); use a new --work-dir") from exc


def _write(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def setting_key(name: str) -> str:
    """A folder name for the setting labelled `name`: file-safe, unique by a digest.

    Example::

        >>> setting_key("tarflow-mini[decoding=gs-jacobi,gs_segments=1/1/1/8]")
        'tarflow-mini_decoding=gs-jacobi_gs_segments=1_1_1_8_-c537a14c1e'
    """
    safe = re.sub(r"[^A-Za-z0-9.=-]+", "_", name)[:80]
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


@dataclass
class Throughput:
    """A quality pass's costs so far: images and seconds of sampling (generate + decode) and of
    what follows it up to the next batch (the feature networks; `harness.sweep.quality`)."""

    sample_images: int = 0
    sample_seconds: float = 0.0
    feature_images: int = 0
    feature_seconds: float = 0.0


class SettingEntry:
    """One setting's folder in a sweep's work dir."""

    def __init__(self, root: Path, model: str, options: dict[str, Any]):
        self.model, self.options, self.label = model, json_options(options), label(model, options)
        self.path = root / SETTINGS / setting_key(self.label)

    eval_dir = property(lambda self: self.path / "eval")
    throughput_file = property(lambda self: self.path / "throughput.json")
    quality_file = property(lambda self: self.path / "quality.json")
    timing_file = property(lambda self: self.path / "timing.json")

    def quality(self) -> list[dict] | None:
        """Its quality and cost rows, None until its pass is done."""
        return _json(self.quality_file)["rows"] if self.quality_file.is_file() else None

    def timing(self) -> dict | None:
        """{"rows": [...], "pyperf": suite JSON or None}, None until it is timed."""
        return _json(self.timing_file) if self.timing_file.is_file() else None

    def write_quality(self, rows: list[dict]) -> None:
        _write(self.quality_file, {"rows": rows})

    def write_timing(self, rows: list[dict], pyperf_json: str | None) -> None:
        _write(self.timing_file, {"rows": rows, "pyperf": pyperf_json})

    def throughput(self) -> Throughput:
        return Throughput(**_json(self.throughput_file)) if self.throughput_file.is_file() else Throughput()

    def write_throughput(self, t: Throughput) -> None:
        _write(self.throughput_file, asdict(t))


class SweepDir:
    """The manifest and setting entries of one sweep.

    Args:
        path: the work dir.
        fixed: what every run of the sweep must share; a run whose `fixed` differs is refused.
    """

    def __init__(self, path: str | Path, fixed: dict[str, Any]):
        self.path = Path(path)
        self.fixed = json.loads(json.dumps(fixed, sort_keys=True))  # as JSON reads it back
        self.manifest: dict[str, Any] | None = None

    def check(self) -> dict[str, Any] | None:
        """The stored manifest of this sweep, or None when the folder is new or empty; an
        InputError when it holds anything else, naming each setting that differs. Writes nothing."""
        file = self.path / MANIFEST
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"--work-dir {self.path} exists and is not a directory")
        if not file.is_file():
            if self.path.exists() and any(self.path.iterdir()):
                raise InputError(f"--work-dir {self.path} is not empty and holds no sweep ({MANIFEST}); use an "
                                 f"empty or new directory")
            return None
        stored = _json(file)
        if stored.get("format") != FORMAT:
            raise InputError(f"--work-dir {self.path}: {MANIFEST} is of format {stored.get('format')!r}, not "
                             f"{FORMAT!r}; use a new --work-dir")
        old = stored["fixed"]
        if old != self.fixed:
            diffs = [f"{k}: {old.get(k, '(absent)')!r} there, {self.fixed.get(k, '(absent)')!r} now"
                     for k in sorted(set(old) | set(self.fixed)) if old.get(k) != self.fixed.get(k)]
            raise InputError(f"--work-dir {self.path} holds a sweep of other settings ({'; '.join(diffs)}); rerun "
                             f"with its arguments (another grid extends it) or use a new --work-dir")
        self.manifest = stored
        return stored

    def create(self, run_id: str, baselines: dict[str, dict[str, Any]], outputs: list[str]) -> None:
        """Write the manifest of a new sweep, or add `outputs` to a stored one's."""
        if self.manifest is None:
            self.manifest = {"format": FORMAT, "run_id": run_id, "fixed": self.fixed,
                             "baselines": {m: json_options(o) for m, o in baselines.items()}, "outputs": []}
        self.manifest["outputs"] = sorted(set(self.manifest["outputs"]) | set(outputs))
        (self.path / SETTINGS).mkdir(parents=True, exist_ok=True)
        _write(self.path / MANIFEST, self.manifest)

    def entry(self, model: str, options: dict[str, Any]) -> SettingEntry:
        return SettingEntry(self.path, model, options)

    def register(self, model: str, options: dict[str, Any]) -> SettingEntry:
        """The setting's entry, created (after every setting already there) if it is new."""
        e = self.entry(model, options)
        if not (e.path / "setting.json").is_file():
            e.path.mkdir(parents=True, exist_ok=True)
            _write(e.path / "setting.json", {"model": model, "options": e.options, "label": e.label,
                                             "order": len(self._stored())})
        return e

    def _stored(self) -> list[dict]:
        root = self.path / SETTINGS
        return [_json(f) for f in sorted(root.glob("*/setting.json"))] if root.is_dir() else []

    def entries(self) -> list[SettingEntry]:
        """Every setting of the sweep, in the order it joined."""
        return [self.entry(s["model"], s["options"]) for s in sorted(self._stored(), key=lambda s: s["order"])]

    def calibration(self) -> list[dict]:
        """[{"rows": [...], "pyperf": suite JSON}, ...]: one per process that timed settings and ran to its end."""
        file = self.path / CALIBRATION
        return _json(file)["runs"] if file.is_file() else []

    def add_calibration(self, rows: list[dict], pyperf_json: str | None) -> None:
        _write(self.path / CALIBRATION, {"runs": self.calibration() + [{"rows": rows, "pyperf": pyperf_json}]})
