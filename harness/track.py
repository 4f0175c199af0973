"""The mini track: small models really trained on a packaged dataset, measured by the same harness.

No ImageNet checkpoint can be had offline, so every other FID nfebench computes by itself
comes from random weights. This track trains, on two CPU cores in minutes, BiFlow's recipe
in miniature on scikit-learn's 8x8 digits (`harness.datasets`):

- ``tarflow-mini``: a pixel TARFlow teacher, maximum likelihood (`adapters.tarflow.train`);
- ``biflow-mini``: a BiFlow student of the frozen teacher, with hidden alignment, learned
  denoising and training-time guidance (`adapters.biflow.train`);
- ``rf-mini``: a one-step Rectified Flow baseline (`adapters.flowmatch.train`);

then evaluates each with ``nfebench eval`` against the 500 held-out digits (FID in ``adm``
mode, precision and recall), beside the same architecture with random weights (the exact
initial weights training started from) and a snapshot taken halfway through training, and
times the three with ``nfebench bench``. Run files go to ``results/runs/`` with ``mini`` in
their names, with a JSON manifest saying which weights are which (steps, seed, loss).

Checkpoints live in a cache folder (``$NFEBENCH_CACHE``, else ``~/.cache/nfebench``), under
``mini/<budget>/``, never in git. A cached checkpoint is used only if its sidecar vouches
for it (same settings, same sha256); otherwise it is retrained, and the reason printed. An
interrupted training resumes from its last saved step.

Example::

    result = run_track(BUDGETS["full"])            # what `nfebench track mini` does
    result.fids["biflow-mini"], result.fids["biflow-mini@random"]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.datasets import Split, load_digits_split, write_reference
from harness.errors import InputError
from harness.results import atomic_write, new_provenance

TEACHER, STUDENT, BASELINE = "tarflow-mini", "biflow-mini", "rf-mini"
MODELS = (TEACHER, STUDENT, BASELINE)
RANDOM, TRAINED, HALF = "random", "trained", "half"  # the roles of evaluated weights
RUNS_DIR = Path("results/runs")
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Budget:
    """Steps, samples and seeds of one track run; `BUDGETS` holds the committed ones."""

    name: str
    steps: dict[str, int]  # training steps per model id
    batch_size: int = 64
    lr: float = 2e-3
    draws: int = 2  # teacher noise draws per training image for the student's pairs
    num_samples: int = 200  # samples per FID; the reference is always the 500 held-out digits
    eval_batch_size: int = 100
    metrics: str = "fid,pr"
    seed: int = 0  # training seed; eval and bench use seed 0
    half: bool = True  # also evaluate the snapshot at half the steps (the schedule check)
    bench: bool = True
    bench_batch_sizes: str = "1,64"
    save_every: int = 250

    def key(self, model: str, steps: int, teacher_weights: str | None = None) -> dict:
        """What a checkpoint's sidecar must say for it to be reused."""
        from adapters.registry import resolve_config

        meta = {"model": model, "steps": steps, "total_steps": self.steps[model], "batch_size": self.batch_size,
                "lr": self.lr, "seed": self.seed, "dataset": "digits",
                "config": json.loads(json.dumps(asdict(resolve_config(model)), default=str))}
        if model == STUDENT:
            meta.update(draws=self.draws, teacher=teacher_weights)
        return meta


BUDGETS = {
    # `nfebench track mini`: the committed run (results/runs/mini-full-*).
    "full": Budget("full", steps={TEACHER: 2000, STUDENT: 1500, BASELINE: 1500}),
    # The CI gate's quality rows and the tests: the same recipe on a reduced budget.
    "ci": Budget("ci", steps={TEACHER: 300, STUDENT: 200, BASELINE: 600}, num_samples=48, eval_batch_size=48,
                 half=False, bench=False, draws=1, save_every=100),
}


def cache_dir() -> Path:
    """``$NFEBENCH_CACHE/mini``, else ``~/.cache/nfebench/mini``."""
    root = os.environ.get("NFEBENCH_CACHE") or Path.home() / ".cache" / "nfebench"
    return Path(root) / "mini"


@dataclass
class Checkpoint:
    model: str
    role: str  # TRAINED or HALF
    steps: int
    path: Path
    weights: str
    loss: float | None = None
    seconds: float | None = None  # training wall time (None when taken from the cache)


# ----------------------------------------------------------------------------- training


def _trainable(model: str, split: Split, budget: Budget, teacher: Checkpoint | None):
    """(sampler, modules to train, objective) for `model`, starting from its random-init weights."""
    from adapters import load_sampler

    sampler = load_sampler(model)
    if model == TEACHER:
        from adapters.tarflow.train import nll_objective

        sampler.net.requires_grad_(True)
        return sampler, sampler.net, nll_objective(sampler.net, split.train_x, split.train_y,
                                                   noise_std=sampler.config.noise_std)
    if model == BASELINE:
        from adapters.flowmatch.train import velocity_objective

        return sampler, sampler.net, velocity_objective(sampler.net, split.train_x, split.train_y)
    from adapters.biflow.model import AlignmentHeads
    from adapters.biflow.train import distill_objective, make_pairs

    frozen = load_sampler(TEACHER, checkpoint=str(teacher.path))
    pairs = make_pairs(frozen, split.train_x, split.train_y, draws=budget.draws, seed=budget.seed)
    heads = AlignmentHeads.for_net(sampler.net)
    return sampler, nn.ModuleDict({"net": sampler.net, "heads": heads}), distill_objective(sampler.net, heads, pairs)


def ensure_trained(model: str, split: Split, budget: Budget, folder: Path, *, teacher: Checkpoint | None = None,
                   progress: bool = True, log: Callable[[str], None] = print) -> list[Checkpoint]:
    """The trained checkpoint of `model` (and its half-way snapshot), from the cache or trained now.

    A cached file is used only if `check_checkpoint` passes; otherwise the reason is logged
    and the model is trained (resuming from a saved training state if one exists).
    """
    from adapters.training import TrainConfig, check_checkpoint, save_checkpoint, train

    total = budget.steps[model]
    wanted = [(TRAINED, total)] + ([(HALF, total // 2)] if budget.half else [])
    teacher_weights = teacher.weights if teacher else None
    paths = {role: folder / f"{model}-{steps}.pt" for role, steps in wanted}
    problems = {role: check_checkpoint(paths[role], budget.key(model, steps, teacher_weights))
                for role, steps in wanted}
    if not any(problems.values()):
        return [Checkpoint(model, role, steps, paths[role], _sidecar_weights(paths[role])) for role, steps in wanted]
    for role, why in problems.items():
        if why and paths[role].exists():
            log(f"{model}: not using the cached checkpoint: {why}; retraining")
    sampler, modules, objective = _trainable(model, split, budget, teacher)
    config = TrainConfig(steps=total, batch_size=budget.batch_size, lr=budget.lr, seed=budget.seed,
                         save_every=budget.save_every)
    key = json.dumps(budget.key(model, total, teacher_weights), sort_keys=True)
    saved: dict[str, str] = {}

    def snapshot(done: int) -> None:
        if budget.half and done == total // 2:
            saved[HALF] = save_checkpoint(sampler.net, paths[HALF], budget.key(model, done, teacher_weights))

    result = train(modules, objective, config, state_path=folder / f"{model}-{total}.state", key=key,
                   desc=f"train {model}", progress=progress, on_step=snapshot, log=log)
    sampler.net.eval().requires_grad_(False)
    saved[TRAINED] = save_checkpoint(sampler.net, paths[TRAINED], {**budget.key(model, total, teacher_weights),
                                                                    "loss": result.loss})
    if budget.half and HALF not in saved:  # resumed past the half-way point: the snapshot is on disk
        why = check_checkpoint(paths[HALF], budget.key(model, total // 2, teacher_weights))
        if why:
            raise InputError(f"{model}: the half-way snapshot is unusable ({why}); delete {folder} and rerun")
        saved[HALF] = _sidecar_weights(paths[HALF])
    log(f"{model}: trained {total} steps in {result.seconds:.0f} s (resumed from {result.resumed_from}), "
        f"final loss {result.loss:.4g}")
    return [Checkpoint(model, role, steps, paths[role], saved[role], result.loss if role == TRAINED else None,
                       result.seconds) for role, steps in wanted]


def _sidecar_weights(path: Path) -> str:
    from adapters.training import sidecar

    return json.loads(sidecar(path).read_text())["sha256"]


# ----------------------------------------------------------------------------- measuring


def _nfebench(*args: str, cwd: Path | None = None) -> None:
    """Run the nfebench CLI in a child process (what a user would type); fail loudly."""
    cmd = [sys.executable, "-m", "harness.cli", *args]
    done = subprocess.run(cmd, cwd=cwd)
    if done.returncode:
        raise RuntimeError(f"`nfebench {' '.join(args)}` failed with exit status {done.returncode}")


def reference_stats(split: Split, folder: Path, batch_size: int) -> Path:
    """Statistics and pool_3 features of the held-out digits (computed once, then cached)."""
    stats = folder / "digits-heldout-stats.npz"
    if not stats.exists():
        images = write_reference(split, folder / "digits-heldout.npz")
        _nfebench("ref-stats", str(images), "-o", str(stats), "--with-features", "--batch-size", str(batch_size))
    return stats


@dataclass
class TrackResult:
    run_files: dict[str, Path]  # role -> eval run file
    bench_file: Path | None
    manifest: Path
    fids: dict[str, float] = field(default_factory=dict)  # "model" (trained), "model@half", "model@random"
    seconds: float = 0.0
    checkpoints: list[Checkpoint] = field(default_factory=list)


def run_track(budget: Budget, *, runs_dir: str | Path = RUNS_DIR, cache: str | Path | None = None,
              progress: bool = True, log: Callable[[str], None] = print) -> TrackResult:
    """Train what is missing, then evaluate and time every model; see the module docstring.

    Args:
        budget: steps and samples (`BUDGETS["full"]` for `nfebench track mini`).
        runs_dir: where the run files and manifest are written.
        cache: checkpoint folder (default `cache_dir()`); a `budget.name` subfolder is used.
        progress: progress bars.
        log: where messages go.

    Returns:
        a `TrackResult` with the paths written and the FIDs measured.
    """
    from harness.results import FID, read_run

    t0 = time.perf_counter()
    torch.manual_seed(budget.seed)
    root = Path(cache or cache_dir())
    folder = root / budget.name
    folder.mkdir(parents=True, exist_ok=True)
    split = load_digits_split()
    provenance = new_provenance()
    stem = f"mini-{budget.name}-{provenance['run_id']}"
    runs_dir = Path(runs_dir)
    # One eval run file per role: `nfebench regress` pairs rows by setting, and the trained,
    # half-way and random weights of one model share every setting but the weights.
    run_files = {role: runs_dir / f"{stem}-{role}.csv" for role in (TRAINED, HALF, RANDOM)}
    bench_file, manifest = runs_dir / f"{stem}-bench.csv", runs_dir / f"{stem}.json"

    checkpoints: list[Checkpoint] = []
    teacher_ckpts = ensure_trained(TEACHER, split, budget, folder, progress=progress, log=log)
    checkpoints += teacher_ckpts
    teacher = next(c for c in teacher_ckpts if c.role == TRAINED)
    checkpoints += ensure_trained(STUDENT, split, budget, folder, teacher=teacher, progress=progress, log=log)
    checkpoints += ensure_trained(BASELINE, split, budget, folder, progress=progress, log=log)

    # The reference is shared by the budgets; named relative to the cache folder, so rows name
    # it the same way on every machine.
    stats = reference_stats(split, root, budget.eval_batch_size).name
    common = ["--num-samples", str(budget.num_samples), "--batch-size", str(budget.eval_batch_size), "--seed", "0",
              "--ref", stats, "--metrics", budget.metrics]
    for model in MODELS:
        for c in [c for c in checkpoints if c.model == model]:
            log(f"eval {model} ({c.role}, {c.steps} steps)")
            _nfebench("eval", "--model", model, "--checkpoint", str(c.path.resolve()), *common,
                      "--out", str(run_files[c.role].resolve()), cwd=root)
        log(f"eval {model} (random weights)")
        _nfebench("eval", "--model", model, *common, "--out", str(run_files[RANDOM].resolve()), cwd=root)
    if budget.bench:
        _nfebench("bench", "--models", ",".join(MODELS), "--batch-sizes", budget.bench_batch_sizes, "--decode", "off",
                  "--device", "cpu", "--max-time", "3", "--no-progress", "--out", str(bench_file))

    fids: dict[str, float] = {}
    for role, path in run_files.items():
        for r in read_run(path).to_dict("records") if path.exists() else []:
            if r["metric"] == FID:
                fids[r["model"] if role == TRAINED else f"{r['model']}@{role}"] = float(r["value"])
    seconds = time.perf_counter() - t0
    atomic_write(manifest, json.dumps({
        "format": MANIFEST_FORMAT, "track": "mini", "budget": asdict(budget), "run_id": provenance["run_id"],
        "git_sha": provenance["git_sha"], "dataset": {"name": split.name, "train": len(split.train_y),
                                                      "held_out": len(split.ref_y), "image_size": split.image_size},
        "checkpoints": [{"model": c.model, "role": c.role, "steps": c.steps, "weights": c.weights,
                         "loss": c.loss, "train_seconds": c.seconds} for c in checkpoints],
        "run_files": {role: p.name for role, p in run_files.items() if p.exists()},
        "bench_file": bench_file.name if budget.bench else None,
        "wall_seconds": round(seconds, 1), "fids": fids,
    }, indent=1) + "\n")
    return TrackResult({r: p for r, p in run_files.items() if p.exists()}, bench_file if budget.bench else None,
                       manifest, fids, seconds, checkpoints)
