"""Which process this is among many, and the exchanges a sharded evaluation needs.

`nfebench eval` runs unchanged under the engines people already launch with:

- ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``: the process group is
  started with NCCL when the device is CUDA (each process on ``cuda:LOCAL_RANK``) and gloo
  on the CPU.
- JAX multi-host (a TPU pod): with ``NFEBENCH_JAX_DISTRIBUTED=1`` or
  ``JAX_COORDINATOR_ADDRESS`` set, ``jax.distributed.initialize()`` is called (with
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` where given; on a TPU pod JAX finds them
  itself); rank and world size are ``jax.process_index()`` and ``jax.process_count()``.

Every process takes part in every exchange, failed or not: first an all-gather of each
rank's status (None, or its error), so a rank whose work raised stops the others with its
message (`RankFailed`) instead of leaving them waiting forever; then the results go to rank 0
alone (`World.gather`), which stores and merges them.

Example::

    with distributed_world(torch.device("cpu")) as (world, device):
        parts = run_and_exchange(world, compute_my_part)   # rank 0: one entry per rank
"""

from __future__ import annotations

import contextlib
import os
import pickle
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterator

import numpy as np
import torch

from adapters.api.errors import InputError

NONE, TORCH, JAX = "none", "torch", "jax"
JAX_SWITCH = "NFEBENCH_JAX_DISTRIBUTED"
# How long a collective may wait for the slowest rank: a round is one shard per rank, so
# this bounds the time of one shard, not of the run.
TIMEOUT_ENV = "NFEBENCH_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3600


class RankFailed(RuntimeError):
    """Another process of the run failed; the message is that process's error, `trace` its
    traceback (on another node, the only copy this terminal sees)."""

    def __init__(self, message: str, trace: str = ""):
        super().__init__(message)
        self.trace = trace


@dataclass
class World:
    """This process's place in the run: rank in [0, size), and how to talk to the others.

    `allgather_fn` is None for a single process (`backend` "none"); `gather_fn`, where a
    backend has one, sends to rank 0 only (else `allgather_fn` serves)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = NONE
    allgather_fn: Callable[[Any], list] | None = field(default=None, repr=False)
    gather_fn: Callable[[Any], list | None] | None = field(default=None, repr=False)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allgather(self, obj: Any) -> list:
        """Every process's `obj` (picklable), in rank order, on every process."""
        return [obj] if self.allgather_fn is None else self.allgather_fn(obj)

    def gather(self, obj: Any) -> list | None:
        """Every process's `obj` in rank order on rank 0; None on the other ranks."""
        if self.gather_fn is not None:
            return self.gather_fn(obj)
        parts = self.allgather(obj)
        return parts if self.is_root else None


def _env_int(name: str, default: int | None = None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InputError(f"environment variable {name}={raw!r} is not an integer") from exc


def _timeout() -> timedelta:
    return timedelta(seconds=_env_int(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


def jax_requested() -> bool:
    """True when the environment asks for JAX multi-process (see the module docstring)."""
    return os.environ.get(JAX_SWITCH, "") not in ("", "0") or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))


def _torch_allgather(obj: Any) -> list:
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _torch_gather(obj: Any) -> list | None:
    import torch.distributed as dist

    out: list | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def _jax_allgather(obj: Any) -> list:
    """All-gather of pickled bytes through `process_allgather`, which needs one shape on every
    process: lengths first, then the bytes padded to the longest."""
    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int64))).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:len(data)] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # (P, longest)
    return [pickle.loads(gathered[p, :int(n)].tobytes()) for p, n in enumerate(lengths)]


def torch_world(device: torch.device) -> tuple[World, torch.device]:
    """Start (or join) the torch process group torchrun describes; the device a process uses
    is ``cuda:LOCAL_RANK`` when `device` is CUDA without an index."""
    import torch.distributed as dist

    rank, size, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's object collectives use the current device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size,
                                timeout=_timeout())
    return World(dist.get_rank(), dist.get_world_size(), local, TORCH, _torch_allgather, _torch_gather), device


def jax_world() -> World:
    """Initialise JAX's multi-process runtime (once) and read rank and size from it."""
    import jax

    initialized = getattr(jax.distributed, "is_initialized", None)  # not in every jax the extra allows
    if initialized is None or not initialized():
        jax.distributed.initialize(num_processes=_env_int("JAX_NUM_PROCESSES"),
                                   process_id=_env_int("JAX_PROCESS_ID"))
    return World(jax.process_index(), jax.process_count(), 0, JAX, _jax_allgather)


@contextlib.contextmanager
def distributed_world(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """The `World` this process belongs to, and the device it should use.

    torchrun (``WORLD_SIZE`` > 1) gives a torch world, a JAX multi-process environment a JAX
    one, anything else a single process. A torch process group started here is destroyed
    when the block ends without an error (after an error the process simply exits).

    Args:
        device: the device asked for (``--device``); under torchrun ``cuda`` becomes
            ``cuda:LOCAL_RANK``.

    Example::

        with distributed_world(torch.device("cpu")) as (world, device):
            print(world.rank, world.size)
    """
    import torch.distributed as dist

    if (_env_int("WORLD_SIZE", 1) or 1) > 1:
        started = not dist.is_initialized()
        world, device = torch_world(device)
        yield world, device
        # Reached on success only: after an error the other ranks may be gone, and waiting
        # for them would hang. Leaving together matters: a gloo rank that destroyed its
        # group while another was still tearing down aborted at exit in 2 of 14 runs here.
        if started:
            dist.barrier()
            dist.destroy_process_group()
    elif jax_requested():
        yield jax_world(), device
    else:
        yield World(), device


@dataclass
class Failure:
    """The status a rank sends when its work raised (None when it did not)."""

    rank: int
    kind: str
    message: str
    trace: str


def run_checked(world: World, work: Callable[[], Any]) -> Any:
    """Run `work()` on every rank and return this rank's result; if it raised on any rank,
    every rank raises: the failing rank its own exception, the others `RankFailed` with the
    failing rank's error, so no process waits for one that will never answer.

    Example::

        sampler = run_checked(world, lambda: load_sampler("sit-b2", device=device))
    """
    error: BaseException | None = None
    result: Any = None
    try:
        result = work()
    except Exception as exc:  # sent to the other ranks, then raised here
        error = exc
    check_all(world, error)
    return result


def run_and_exchange(world: World, work: Callable[[], Any]) -> list | None:
    """`run_checked`, then rank 0 gets every rank's result in rank order, the others None.

    Example::

        parts = run_and_exchange(world, lambda: shard_result(my_shard))   # None off rank 0
    """
    return world.gather(run_checked(world, work))


def check_all(world: World, error: BaseException | None = None) -> None:
    """All-gather each rank's status; raise `error` here, or `RankFailed` if another rank failed."""
    status = None
    if error is not None:
        status = Failure(world.rank, type(error).__name__, str(error),
                         "".join(traceback.format_exception(error)))
    statuses = world.allgather(status)
    if error is not None:
        raise error
    failed = [f for f in statuses if f is not None]
    if failed:
        f = failed[0]
        raise RankFailed(f"rank {f.rank} of {world.size} failed with {f.kind}: {f.message}", f.trace)


def run_on_root(world: World, work: Callable[[], Any]) -> Any:
    """Run `work()` on rank 0 and give its result to every rank; an error there stops all.

    Example::

        state = run_on_root(world, read_work_dir)   # the same object on every rank
    """
    error: BaseException | None = None
    result: Any = None
    if world.is_root:
        try:
            result = work()
        except Exception as exc:
            error = exc
    check_all(world, error)
    return world.allgather(result)[0] if world.size > 1 else result


def rounds(todo: list[int], size: int) -> list[list[int | None]]:
    """Shards to do, dealt round-robin: round r gives rank k ``todo[r * size + k]`` (None when
    the shards run out), so every rank takes part in every round's exchange.

    Example::

        >>> rounds([0, 1, 2], 2)
        [[0, 1], [2, None]]
    """
    out = []
    for start in range(0, len(todo), size):
        chunk: list[int | None] = list(todo[start:start + size])
        out.append(chunk + [None] * (size - len(chunk)))
    return out
