"""Clocks per backend and the warm-up/repeat loop that uses them.

A clock times one call of a function and returns seconds. `measure` runs the warm-up
calls (compilation, allocator growth and caches land there, and are kept apart) and then
the timed calls, and returns both in a `Timing`.

- CPU: `WallClock`, the host's `time.perf_counter` around the call. Torch CPU ops are
  synchronous, so the call has finished when it returns.
- CUDA: `CudaEventClock`, a pair of CUDA events recorded around the call on the current
  stream, with a device synchronisation before the start (nothing queued earlier is
  counted) and on the end event before reading it.
- Asynchronous hosts such as JAX: `WallClock(sync=jax.block_until_ready)`, so the clock
  stops only when the result exists.

Example::

    t = measure(lambda: model(x), WallClock(), warmup=2, repeats=10)
    t.median * 1e3, t.spread * 1e3, t.n     # ms per call, its MAD, 10
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Protocol, Sequence

import torch


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
    """Seconds per call of the timed calls (`values`) and of the warm-up calls."""

    values: tuple[float, ...]
    warmups: tuple[float, ...]

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


def measure(fn: Callable[[], Any], clock: Clock, *, warmup: int, repeats: int,
            max_time: float | None = None, timed_region: ContextManager | None = None) -> Timing:
    """Call `fn` `warmup` times untimed-for-statistics, then time up to `repeats` calls.

    Args:
        fn: the workload; its inputs are prepared outside it.
        clock: how one call is timed (`clock_for(device)`).
        warmup: calls before the timed ones; their times are kept in `Timing.warmups`
            but never enter the statistics.
        repeats: the most timed calls.
        max_time: stop early once the timed calls add up to this many seconds (at least
            one call is always timed), so a slow model does not hold up a sweep.
        timed_region: a context entered around the timed calls only, not the warm-up
            (`harness.timing.memory.PeakMemory` measures peak memory this way).

    Example::

        >>> t = measure(lambda: sum(range(1000)), WallClock(), warmup=1, repeats=5)
        >>> t.n
        5
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    warm = tuple(clock.time_call(fn) for _ in range(warmup))
    values: list[float] = []
    with timed_region or contextlib.nullcontext():
        while len(values) < repeats and (max_time is None or not values or sum(values) < max_time):
            values.append(clock.time_call(fn))
    return Timing(tuple(values), warm)
