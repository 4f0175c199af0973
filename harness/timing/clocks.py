"""Clocks per backend, and `measure`, which times one workload with them.

A clock times one call of a function and returns seconds. `measure` runs the warm-up
calls (compilation, allocator growth and caches land there, and are kept apart) and then
timed calls until the median's interval is tight enough or the budget is spent
(`harness.timing.adaptive`, which also times several workloads in alternating rounds),
and returns both in a `Timing`.

- CPU: `WallClock`, the host's `time.perf_counter` around the call. Torch CPU ops are
  synchronous, so the call has finished when it returns.
- CUDA: `CudaEventClock`, a pair of CUDA events recorded around the call on the current
  stream, with a device synchronisation before the start (nothing queued earlier is
  counted) and on the end event before reading it.
- Asynchronous hosts such as JAX: `WallClock(sync=jax.block_until_ready)`, so the clock
  stops only when the result exists.

Example::

    t = measure(lambda: model(x), WallClock(), warmup=2, repeats=20, max_time=10.0)
    t.median * 1e3, t.spread * 1e3, t.n     # ms per call, its MAD, 5 to 20 calls
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch

from harness.timing.adaptive import Budget, time_rounds
from harness.timing.stats import DEFAULT_CI_TARGET


class Clock(Protocol):
    def time_call(self, fn: Callable[[], Any]) -> float:
        """Seconds that one call of `fn` takes."""


class WallClock:
    """Host wall clock around each call.

    Args:
        clock: seconds as a float, monotonic (tests pass a fake one).
        sync: called with the result before the clock stops, for backends whose calls
            return before the work is done (``jax.block_until_ready``).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 sync: Callable[[Any], Any] | None = None):
        self.clock = clock
        self.sync = sync

    def time_call(self, fn: Callable[[], Any]) -> float:
        start = self.clock()
        out = fn()
        if self.sync is not None:
            self.sync(out)
        return self.clock() - start


class CudaEventClock:
    """CUDA events around each call, on `device`'s current stream."""

    def __init__(self, device: torch.device | str = "cuda"):
        self.device = torch.device(device)

    def time_call(self, fn: Callable[[], Any]) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(self.device)  # earlier queued work is not ours to count
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # elapsed_time is in ms


def clock_for(device: torch.device | str) -> Clock:
    """The clock that times work on `device` correctly: CUDA events on CUDA, else wall clock."""
    device = torch.device(device)
    return CudaEventClock(device) if device.type == "cuda" else WallClock()


def median_mad(values: Sequence[float]) -> tuple[float, float]:
    """Median and median absolute deviation (the spread pyperf reports next to a median)."""
    med = statistics.median(values)
    return med, statistics.median(abs(v - med) for v in values)


@dataclass(frozen=True)
class Timing:
    """Seconds per call of the timed calls (`values`) and of the warm-up calls, and why the
    timed calls stopped (`harness.timing.adaptive`: interval met, budget spent, ...) with the
    note a row gets when the interval was not met."""

    values: tuple[float, ...]
    warmups: tuple[float, ...]
    stop: str = ""
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float | None:
        """Median absolute deviation of the values; None with fewer than two values."""
        return median_mad(self.values)[1] if self.n > 1 else None


def measure(fn: Callable[[], Any], clock: Clock, *, warmup: int, repeats: int, max_time: float | None = None,
            ci_target: float = DEFAULT_CI_TARGET) -> Timing:
    """Call `fn` `warmup` times untimed-for-statistics, then time calls until the median's
    95% interval has a half-width of at most `ci_target` x the median, or `max_time` is spent,
    or `repeats` calls are done; at least 5 calls unless one call exceeds `max_time`.

    Args:
        fn: the workload; its inputs are prepared outside it.
        clock: how one call is timed (`clock_for(device)`).
        warmup: calls before the timed ones; their times are kept in `Timing.warmups`
            but never enter the statistics.
        repeats: the most timed calls.
        max_time: seconds the timed calls may add up to (None: no limit), so a slow model
            does not hold up a sweep.
        ci_target: the interval's half-width, as a fraction of the median, that is enough.

    Example::

        >>> t = measure(lambda: sum(range(1000)), WallClock(), warmup=1, repeats=5)
        >>> t.n
        5
    """
    rounds = time_rounds({"fn": fn}, clock, warmup=warmup,
                         budget=Budget(repeats=repeats, max_time=max_time, ci_target=ci_target))
    s = rounds.members["fn"]
    if s.error is not None:
        raise s.error
    return Timing(tuple(s.values), tuple(s.warmups), s.stop, s.note)
