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
times the three trained models with ``nfebench bench`` (batch 1 and 64), every setting
quality-gated with a FID of N samples on the same weights (`harness.quality`):

- ``tarflow-mini`` at sequential decoding (the reference), Jacobi at tolerances 1e-2, 1e-3 and
  1e-4, and GS-Jacobi at 1e-3 (`gs_jacobi_setting`: the plan of `gs_jacobi_plan` from the
  training digits, as the authors plan on training images; the held-out digits are the FID
  reference and are not used to tune the sampler);
- ``biflow-mini`` and ``rf-mini`` at their defaults; ``biflow-mini`` is timed in alternating
  rounds with every teacher setting, so its speed-up over each has an interval;
- the three models again in bfloat16, each against its float32 FID;

and sweeps the trained models' settings with ``nfebench sweep`` (`harness.sweep`), each setting
measured for quality at the eval's N and seed (FID, KID, precision and recall, and IS where
torch-fidelity's weights are here) and timed against its model's baseline setting (`SWEEPS`):

- ``rf-mini`` at 1, 2, 4 and 8 Euler steps;
- ``biflow-mini`` over guidance 0, 0.5, 1 and 2 (the scales it was trained with);
- ``tarflow-mini`` at sequential and Jacobi decoding, each at guidance 0 and 1.

The ``ci`` budget sweeps fewer settings (`QUICK_GRID`), as ``--quick`` does on the full budget.

Run files go to ``results/local/`` by default (git-ignored, as bench's), the curated committed
run to ``results/runs/`` (``nfebench track mini --out-dir results/runs``), with ``mini`` in
their names and a JSON manifest saying which weights are which (steps, seed, loss), and the
machine's load average at the start and the end (the machine may be shared).

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
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from adapters.api.errors import InputError
from harness.datasets import Split, load_digits_split, write_reference
from harness.results import atomic_write, new_provenance

TEACHER, STUDENT, BASELINE = "tarflow-mini", "biflow-mini", "rf-mini"
MODELS = (TEACHER, STUDENT, BASELINE)
RANDOM, TRAINED, HALF = "random", "trained", "half"  # the roles of evaluated weights
RUNS_DIR = Path("results/local")  # git-ignored; the committed run: --out-dir results/runs
# Format history: 1 first; 2 the bench times trained checkpoints with the teacher's decodings and
# bfloat16, quality-gated ("bench_bf16_file", "gs_jacobi", "setting_fids"); 3 the sweep of the
# trained models' settings ("sweep_file", "sweep_pyperf_file", "sweep") and the load average ("load").
MANIFEST_FORMAT = 3
JACOBI_TOLS = (1e-2, 1e-3, 1e-4)  # the teacher's Jacobi settings
GS_TOL = 1e-3  # GS-Jacobi's tolerance


@dataclass(frozen=True)
class TrackSweep:
    """The `nfebench sweep` of the trained models: its ``--grid`` values, timing batch sizes, the
    seconds per timed point and whether the calibration workload is timed."""

    grid: tuple[str, ...]
    batch_sizes: str = "1,64"
    max_time: float = 3.0
    calibrate: bool = True
    metrics: str = "fid,kid,is,pr"  # IS only where torch-fidelity's weights are (the sweep says so)
    # images per call of the quality passes (None: the budget's eval batch size); two batches or
    # more per pass, so its feature throughput is measured (`harness.sweep.quality`)
    eval_batch_size: int | None = None


# 12 settings; about 0.2 s per image of Inception features on 2 quiet cores, so 200 samples each
# cost some 8 minutes, the timings two more.
FULL_GRID = (f"{BASELINE}:num_steps=1,2,4,8", f"{STUDENT}:guidance=0,0.5,1,2",
             f"{TEACHER}:decoding=sequential,jacobi", f"{TEACHER}:guidance=0,1")
QUICK_GRID = (f"{BASELINE}:num_steps=1,2", f"{STUDENT}:guidance=0,1")  # --quick, and the ci budget's
SWEEPS = {"full": TrackSweep(FULL_GRID), "quick": TrackSweep(QUICK_GRID)}


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
    bench: bool = True  # time the trained models, every setting with a FID of num_samples
    bench_batch_sizes: str = "1,64"
    bench_max_time: float = 3.0  # seconds per point (`nfebench bench --max-time`)
    save_every: int = 250
    sweep: TrackSweep | None = SWEEPS["full"]  # the settings swept (`nfebench sweep`); None: no sweep

    def key(self, model: str, steps: int, teacher_weights: str | None = None) -> dict:
        """What a checkpoint's sidecar must say for it to be reused."""
        from adapters.api.registry import resolve_config

        # threads: the same seed trains other weights with another intra-op thread count (its sums split
        # differently), so a checkpoint trained with OMP_NUM_THREADS=1 is not reused by a 2-thread run.
        meta = {"model": model, "steps": steps, "total_steps": self.steps[model], "batch_size": self.batch_size,
                "lr": self.lr, "seed": self.seed, "threads": torch.get_num_threads(), "dataset": "digits",
                "config": json.loads(json.dumps(asdict(resolve_config(model)), default=str))}
        if model == STUDENT:
            meta.update(draws=self.draws, teacher=teacher_weights)
        return meta


BUDGETS = {
    # `nfebench track mini`: the committed run (results/runs/mini-full-*).
    "full": Budget("full", steps={TEACHER: 2000, STUDENT: 1500, BASELINE: 1500}),
    # The CI gate's quality rows and the tests: the same recipe on a reduced budget.
    "ci": Budget("ci", steps={TEACHER: 300, STUDENT: 200, BASELINE: 600}, num_samples=48, eval_batch_size=48,
                 half=False, bench=False, draws=1, save_every=100,
                 sweep=TrackSweep(QUICK_GRID, batch_sizes="1", max_time=1.0, calibrate=False, eval_batch_size=24)),
}


def quick(budget: Budget) -> Budget:
    """`budget` sweeping the `QUICK_GRID`'s fewer settings (``nfebench track mini --quick``)."""
    return replace(budget, sweep=None if budget.sweep is None else replace(budget.sweep, grid=QUICK_GRID))


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
    """(sampler, Trainable) for `model`, from its random-init weights, through its family's
    ``trainer`` hook (a student gets its frozen teacher)."""
    from adapters import get_spec, load_sampler

    sampler = load_sampler(model)
    frozen = None if teacher is None else load_sampler(teacher.model, checkpoint=str(teacher.path))
    trainable = get_spec(model).resolve("trainer")
    return sampler, trainable(sampler, split.train_x, split.train_y, teacher=frozen, draws=budget.draws,
                              seed=budget.seed)


def ensure_trained(model: str, split: Split, budget: Budget, folder: Path, *, teacher: Checkpoint | None = None,
                   progress: bool = True, log: Callable[[str], None] = print) -> list[Checkpoint]:
    """The trained checkpoint of `model` (and its half-way snapshot), from the cache or trained now.

    A cached file is used only if `check_checkpoint` passes; otherwise the reason is logged
    and the model is trained (resuming from a saved training state if one exists).
    """
    from harness.training import TrainConfig, check_checkpoint, save_checkpoint, train

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
    sampler, (modules, objective) = _trainable(model, split, budget, teacher)
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
    from harness.training import sidecar

    return json.loads(sidecar(path).read_text())["sha256"]


# ----------------------------------------------------------------------------- measuring


def _nfebench(*args: str, cwd: Path | None = None) -> None:
    """Run an nfebench command as a user would type it, in this process (each child process
    would import torch and the Inception network again: half of a ci-budget eval's time);
    fail loudly."""
    from contextlib import chdir, nullcontext

    from harness.cli import main

    with chdir(cwd) if cwd is not None else nullcontext():
        status = main(list(args))
    if status:
        raise RuntimeError(f"`nfebench {' '.join(args)}` failed with exit status {status}")


def gs_jacobi_setting(teacher: Checkpoint, split: Split) -> tuple[dict, dict]:
    """The teacher's GS-Jacobi options and how they were chosen (for the manifest): its family's
    ``decoding_plan`` on 256 training digits, as the authors plan on training images."""
    from adapters import get_spec, load_sampler

    sampler = load_sampler(TEACHER, checkpoint=str(teacher.path))
    plan = get_spec(TEACHER).resolve("decoding_plan")
    return plan(sampler, split.train_x[:256], split.train_y[:256], tol=GS_TOL)


def teacher_settings(gs_options: dict) -> list[dict]:
    """The teacher's decodings the track times: sequential, Jacobi at `JACOBI_TOLS`, GS-Jacobi."""
    return [{"decoding": "sequential"}] + [{"decoding": "jacobi", "jacobi_tol": t} for t in JACOBI_TOLS] + [gs_options]


def _options_arg(model: str, options: dict) -> str:
    """``--options`` text of one setting (`harness.settings` syntax)."""
    from harness.settings import options_text

    return f"{model}:{options_text(options)}"


def reference_stats(split: Split, folder: Path, batch_size: int) -> Path:
    """Statistics and pool_3 features of the held-out digits (computed once, then cached)."""
    stats = folder / "digits-heldout-stats.npz"
    if not stats.exists():
        images = write_reference(split, folder / "digits-heldout.npz")
        _nfebench("ref-stats", str(images), "-o", str(stats), "--with-features", "--batch-size", str(batch_size))
    return stats


def sweep_trained(budget: Budget, trained: dict[str, Checkpoint], stats: str, root: Path, out: Path,
                  pyperf_json: Path, *, progress: bool = True) -> None:
    """``nfebench sweep`` of the trained models over `budget.sweep`'s grid, at the eval's N and seed
    against the held-out digits (`stats`, named relative to the cache folder `root`, as the evals
    name it), into the run file `out` and `pyperf_json`. Its work dir lives in the cache folder and
    is removed once the sweep is done."""
    sweep = budget.sweep
    work = (root / budget.name / f"sweep-{out.stem}").resolve()
    models = [m for m in MODELS if any(g.startswith(f"{m}:") for g in sweep.grid)]  # the models the grid names
    args = ["sweep", "--models", ",".join(models)]
    for g in sweep.grid:
        args += ["--grid", g]
    for m in models:
        args += ["--checkpoint", f"{m}={trained[m].path.resolve()}"]
    args += ["--num-samples", str(budget.num_samples), "--eval-batch-size",
             str(sweep.eval_batch_size or budget.eval_batch_size), "--ref", stats, "--seed", "0",
             "--metrics", sweep.metrics, "--batch-sizes", sweep.batch_sizes, "--device", "cpu",
             "--max-time", str(sweep.max_time), "--work-dir", str(work), "--out", str(out),
             "--pyperf-json", str(pyperf_json)]
    args += [] if sweep.calibrate else ["--no-calibration"]
    args += [] if progress else ["--no-progress"]
    _nfebench(*args, cwd=root)
    shutil.rmtree(work)


def _load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


@dataclass
class TrackResult:
    run_files: dict[str, Path]  # role -> eval run file
    bench_file: Path | None  # float32: every setting of the teacher
    manifest: Path
    fids: dict[str, float] = field(default_factory=dict)  # "model" (trained), "model@half", "model@random"
    seconds: float = 0.0
    checkpoints: list[Checkpoint] = field(default_factory=list)
    bench_bf16_file: Path | None = None
    setting_fids: dict[str, float] = field(default_factory=dict)  # "label@dtype" -> the quality gate's FID
    sweep_file: Path | None = None  # the sweep of the trained models' settings
    sweep_seconds: float | None = None


def run_track(budget: Budget, *, runs_dir: str | Path = RUNS_DIR, cache: str | Path | None = None,
              progress: bool = True, log: Callable[[str], None] = print) -> TrackResult:
    """Train what is missing, then evaluate and time every model; see the module docstring.

    Args:
        budget: steps and samples (`BUDGETS["full"]` for `nfebench track mini`).
        runs_dir: where the run files and manifest are written (created if missing).
        cache: checkpoint folder (default `cache_dir()`); a `budget.name` subfolder is used.
        progress: progress bars.
        log: where messages go.

    Returns:
        a `TrackResult` with the paths written and the FIDs measured.
    """
    from harness.results import FID, read_run

    t0 = time.perf_counter()
    load_start = _load()
    torch.manual_seed(budget.seed)
    root = Path(cache or cache_dir())
    folder = root / budget.name
    folder.mkdir(parents=True, exist_ok=True)
    split = load_digits_split()
    provenance = new_provenance()
    stem = f"mini-{budget.name}-{provenance['run_id']}"
    runs_dir = Path(runs_dir).resolve()  # the commands run in the cache folder
    runs_dir.mkdir(parents=True, exist_ok=True)
    # One eval run file per role: `nfebench regress` pairs rows by setting, and the trained,
    # half-way and random weights of one model share every setting but the weights.
    run_files = {role: runs_dir / f"{stem}-{role}.csv" for role in (TRAINED, HALF, RANDOM)}
    bench_files = {"float32": runs_dir / f"{stem}-bench.csv", "bfloat16": runs_dir / f"{stem}-bench-bf16.csv"}
    sweep_files = (runs_dir / f"{stem}-sweep.csv", runs_dir / f"{stem}-sweep.pyperf.json")
    manifest = runs_dir / f"{stem}.json"

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
    gs = None
    if budget.bench:
        trained = {c.model: c for c in checkpoints if c.role == TRAINED}
        gs_options, gs = gs_jacobi_setting(trained[TEACHER], split)
        # The trained weights of all three, the gate's FIDs at the eval's N and seed (0).
        common = ["--models", ",".join(MODELS), "--batch-sizes", budget.bench_batch_sizes, "--decode", "off",
                  "--device", "cpu", "--max-time", str(budget.bench_max_time), "--no-progress", "--seed", "0",
                  "--quality-ref", stats, "--quality-n", str(budget.num_samples)]
        for m in MODELS:
            common += ["--checkpoint", f"{m}={trained[m].path.resolve()}"]
        log("bench: the teacher's decodings, quality-gated (float32)")
        options = [a for o in teacher_settings(gs_options) for a in ("--options", _options_arg(TEACHER, o))]
        _nfebench("bench", *common, *options, "--dtype", "float32", "--out", str(bench_files["float32"]), cwd=root)
        log("bench: bfloat16 against float32")
        _nfebench("bench", *common, "--dtype", "bfloat16", "--out", str(bench_files["bfloat16"]), cwd=root)
    sweep_seconds = None
    if budget.sweep is not None:
        log(f"sweep: {' '.join(budget.sweep.grid)}")
        t_sweep = time.perf_counter()
        sweep_trained(budget, {c.model: c for c in checkpoints if c.role == TRAINED}, stats, root, *sweep_files,
                      progress=progress)
        sweep_seconds = time.perf_counter() - t_sweep

    fids: dict[str, float] = {}
    for role, path in run_files.items():
        for r in read_run(path).to_dict("records") if path.exists() else []:
            if r["metric"] == FID:
                fids[r["model"] if role == TRAINED else f"{r['model']}@{role}"] = float(r["value"])
    setting_fids = _setting_fids(bench_files.values()) if budget.bench else {}
    seconds = time.perf_counter() - t0
    atomic_write(manifest, json.dumps({
        "format": MANIFEST_FORMAT, "track": "mini", "budget": asdict(budget), "run_id": provenance["run_id"],
        "git_sha": provenance["git_sha"], "dataset": {"name": split.name, "train": len(split.train_y),
                                                      "held_out": len(split.ref_y), "image_size": split.image_size},
        "checkpoints": [{"model": c.model, "role": c.role, "steps": c.steps, "weights": c.weights,
                         "loss": c.loss, "train_seconds": c.seconds} for c in checkpoints],
        "run_files": {role: p.name for role, p in run_files.items() if p.exists()},
        "bench_file": bench_files["float32"].name if budget.bench else None,
        "bench_bf16_file": bench_files["bfloat16"].name if budget.bench else None,
        "gs_jacobi": gs, "wall_seconds": round(seconds, 1), "fids": fids, "setting_fids": setting_fids,
        "sweep_file": sweep_files[0].name if budget.sweep else None,
        "sweep_pyperf_file": sweep_files[1].name if budget.sweep else None,
        "sweep": None if budget.sweep is None else {**asdict(budget.sweep), "wall_seconds": round(sweep_seconds, 1)},
        # the machine may be shared: its 1/5/15-minute load averages when the track started and ended,
        # and the intra-op threads every step ran with (OMP_NUM_THREADS; one is faster on a busy machine)
        "load": {"start": load_start, "end": _load(), "cpus": os.cpu_count(), "threads": torch.get_num_threads()},
    }, indent=1, default=str) + "\n")
    return TrackResult({r: p for r, p in run_files.items() if p.exists()},
                       bench_files["float32"] if budget.bench else None, manifest, fids, seconds, checkpoints,
                       bench_files["bfloat16"] if budget.bench else None, setting_fids,
                       sweep_files[0] if budget.sweep else None, sweep_seconds)


def _setting_fids(paths) -> dict[str, float]:
    """``"label@dtype"`` -> FID of each quality-gated setting in the bench files."""
    from harness.results import FID, read_run
    from harness.settings import label

    out = {}
    for path in paths:
        for r in read_run(path).to_dict("records"):
            if r["metric"] == FID:
                options = json.loads(r["config"]).get("options") or {}
                out[f"{label(r['model'], options)}@{r['dtype']}"] = float(r["value"])
    return out
