"""The shared training loop of the small models (the mini track): seeded, resumable, with a progress bar.

Each family's objective lives beside its adapter, reached through its spec's ``trainer`` hook
(`adapters.api.training`), as a function ``loss(generator, batch_size) -> scalar`` that draws
its own batch from the generator it is given. The loop seeds that generator from ``(seed, step)`` alone, so a run stopped at step k and resumed
from its saved state gives the same weights as one that never stopped.

Files: the training *state* (weights, optimiser, step) is saved atomically every
``save_every`` steps and removed once training ends; the final *checkpoint* is the
network's ``state_dict`` alone (what `adapters.load_sampler(checkpoint=...)` reads), with a
JSON sidecar holding its sha256 and what produced it, which `check_checkpoint` verifies
before a cached checkpoint is used.

Example::

    >>> net = torch.nn.Linear(2, 1)
    >>> x = torch.randn(64, 2)
    >>> def loss(gen, batch):
    ...     i = torch.randint(0, 64, (batch,), generator=gen)
    ...     return (net(x[i]) - x[i].sum(1, keepdim=True)).pow(2).mean()
    >>> result = train(net, loss, TrainConfig(steps=50, batch_size=16, lr=0.05), progress=False)
    >>> result.steps
    50
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from adapters.api.errors import InputError
from adapters.api.files import atomic_write, file_digest
from adapters.api.training import Objective
_STEP_SEED_STRIDE = 1_000_003  # generator seed of step s: seed * stride + s (distinct for s < stride)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training run (AdamW, linear warm-up, cosine decay to `final_lr_frac`)."""

    steps: int
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 50
    final_lr_frac: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 250

    def lr_at(self, step: int) -> float:
        """Learning rate of (0-based) `step`."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.final_lr_frac + (1 - self.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


@dataclass
class TrainResult:
    steps: int  # steps done in all (including those before a resume)
    resumed_from: int  # 0 for a fresh run
    loss: float  # mean loss of the last (up to) 50 steps of this call
    seconds: float  # wall time of this call


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator every random draw of `step` comes from."""
    return torch.Generator().manual_seed(seed * _STEP_SEED_STRIDE + step)


def _save_state(path: Path, modules: nn.Module, optimizer: torch.optim.Optimizer, step: int, key: str) -> None:
    buf = io.BytesIO()
    torch.save({"step": step, "key": key, "modules": modules.state_dict(), "optimizer": optimizer.state_dict()}, buf)
    atomic_write(path, buf.getvalue())


def _load_state(path: Path, key: str, log: Callable[[str], None]) -> dict | None:
    """The saved state at `path` if it is readable and belongs to this run (same `key`); else None, said why."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not {"step", "key", "modules", "optimizer"} <= set(state):
            raise ValueError("not a training state file")
    except Exception as exc:
        log(f"training state {path} is unreadable ({exc}); starting from step 0")
        return None
    if state["key"] != key:
        log(f"training state {path} belongs to another run ({state['key']}); starting from step 0")
        return None
    return state


def train(modules: nn.Module, objective: Objective, config: TrainConfig, *, state_path: str | Path | None = None,
          key: str = "", desc: str = "train", progress: bool = True,
          on_step: Callable[[int], None] | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Minimise `objective` over the trainable parameters of `modules`.

    Args:
        modules: everything trained (one module, or an `nn.ModuleDict` of several);
            parameters with ``requires_grad=False`` stay fixed.
        objective: ``loss(generator, batch_size)``; all its randomness must come from the
            generator, which is seeded from (config.seed, step).
        config: steps, batch size and optimiser settings.
        state_path: where the resumable state is saved every ``config.save_every`` steps;
            a state found there with the same `key` is resumed. None: no saving.
        key: identifies the run (model, config, data); a saved state of another key is ignored.
        desc: progress-bar label.
        progress: show a tqdm progress bar.
        on_step: called with the number of steps done after each step (snapshots, tests).
        log: where messages about resuming go.

    Returns:
        a `TrainResult`; `modules` holds the trained weights, in train mode.
    """
    from tqdm.auto import tqdm

    if config.steps < 1 or config.batch_size < 1:
        raise InputError(f"steps and batch_size must be positive, got {config.steps} and {config.batch_size}")
    params = [p for p in modules.parameters() if p.requires_grad]
    if not params:
        raise InputError(f"{desc}: no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    key = key or json.dumps(asdict(config), sort_keys=True)
    state_path = Path(state_path) if state_path is not None else None
    start = 0
    state = _load_state(state_path, key, log) if state_path is not None else None
    if state is not None:
        modules.load_state_dict(state["modules"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        log(f"{desc}: resuming from step {start} of {config.steps} ({state_path})")
    modules.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    with tqdm(total=config.steps, initial=start, desc=desc, unit="step", disable=not progress,
              leave=False) as bar:
        for step in range(start, config.steps):
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step)
            loss = objective(step_generator(config.seed, step), config.batch_size)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise RuntimeError(f"{desc}: the loss became {loss_value} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            losses.append(loss_value)
            done = step + 1
            bar.update(1)
            if done % 25 == 0:
                bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.4g}")
            if state_path is not None and done % config.save_every == 0 and done < config.steps:
                _save_state(state_path, modules, optimizer, done, key)
            if on_step is not None:
                on_step(done)
    if state_path is not None:
        state_path.unlink(missing_ok=True)  # finished: the final checkpoint replaces it
    tail = losses[-50:]
    return TrainResult(steps=config.steps, resumed_from=start, loss=sum(tail) / len(tail) if tail else float("nan"),
                       seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- checkpoints


def sidecar(path: str | Path) -> Path:
    """The JSON file that vouches for checkpoint `path`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_checkpoint(net: nn.Module, path: str | Path, meta: dict[str, Any]) -> str:
    """Write ``net.state_dict()`` to `path` (atomically) and its sidecar with sha256 and `meta`;
    returns ``"sha256:<hex>"``, which `load_sampler` reports as the weights."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, buf)
    atomic_write(path, buf.getvalue())
    digest = "sha256:" + file_digest(path, "sha256")
    atomic_write(sidecar(path), json.dumps({"sha256": digest, **meta}, indent=1, sort_keys=True) + "\n")
    return digest


def check_checkpoint(path: str | Path, meta: dict[str, Any]) -> str | None:
    """Why the cached checkpoint at `path` must not be used, or None if it may.

    It may be used only if it exists, its sidecar exists and says the same `meta` (the
    same model, config and training), and the file's sha256 is the one the sidecar holds:
    a truncated or altered file is never loaded silently.
    """
    path, side = Path(path), sidecar(path)
    if not path.exists():
        return f"{path} does not exist"
    if not side.exists():
        return f"{path} has no sidecar {side.name} saying what produced it"
    try:
        recorded = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        return f"its sidecar {side} is unreadable ({exc})"
    stale = sorted(k for k in meta if recorded.get(k) != json.loads(json.dumps(meta[k])))
    if stale:
        return f"{path} was trained with other settings ({', '.join(stale)} differ)"
    digest = "sha256:" + file_digest(path, "sha256")
    if recorded.get("sha256") != digest:
        return (f"{path} is corrupt: its sha256 is {digest[:19]}..., "
                f"the sidecar records {str(recorded.get('sha256'))[:19]}...")
    return None
