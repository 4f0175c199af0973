"""Timer logic against a fake clock: warm-up kept out of the statistics, statistics right.
(Adaptive stopping and interleaved rounds: test_adaptive.py.)"""

import pyperf
import pytest

from harness.timing.clocks import (
    CudaEventClock,
    Timing,
    WallClock,
    clock_for,
    measure,
    median_mad,
)


class FakeClock:
    """A clock that moves only when the fake workload says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def workload(clock, durations):
    it = iter(durations)

    def fn():
        clock.now += next(it)
        return "out"

    return fn


def test_warmup_calls_are_kept_apart_from_the_values():
    clock = FakeClock()
    t = measure(workload(clock, [10.0, 20.0, 1.0, 2.0, 3.0, 4.0, 9.0]), WallClock(clock), warmup=2, repeats=5)
    assert t.warmups == (10.0, 20.0)
    assert t.values == (1.0, 2.0, 3.0, 4.0, 9.0)
    assert t.n == 5
    assert t.median == 3.0
    assert t.spread == 1.0  # |v - 3| = 2, 1, 0, 1, 6 -> median 1


@pytest.mark.parametrize("values", [(1.0, 2.0, 3.0, 4.0, 9.0), (0.5, 0.7, 0.1, 2.0), (3.0, 3.0, 3.5)])
def test_median_and_spread_agree_with_pyperf(values):
    bench = pyperf.Benchmark([pyperf.Run(list(values), metadata={"name": "x", "unit": "second"},
                                         collect_metadata=False)])
    med, mad = median_mad(values)
    assert med == pytest.approx(bench.median())
    assert mad == pytest.approx(bench.median_abs_dev())


def test_one_value_has_no_spread():
    assert Timing((0.5,), ()).spread is None


def test_max_time_stops_after_five_calls_unless_one_call_exceeds_it():
    clock = FakeClock()
    noisy = [5.0] + [1.0, 2.0] * 10  # the warm-up, then calls too spread for a 5% interval
    t = measure(workload(clock, noisy), WallClock(clock), warmup=1, repeats=20, max_time=2.5)
    assert t.values == (1.0, 2.0, 1.0, 2.0, 1.0)  # the budget was spent by call 2, but 5 calls give an interval
    assert t.stop == "budget spent" and "unstable" in t.note and "2.5 s budget" in t.note
    clock = FakeClock()
    t = measure(workload(clock, [7.0, 7.0]), WallClock(clock), warmup=0, repeats=10, max_time=0.1)
    assert t.values == (7.0,) and t.stop == "call over budget"
    assert t.note == "one call (7 s) exceeds the 0.1 s budget: n 1, no interval"


def test_errors_of_the_workload_propagate():
    def broken():
        raise RuntimeError("broken workload")

    with pytest.raises(RuntimeError, match="broken workload"):
        measure(broken, WallClock(), warmup=0, repeats=3)


def test_sync_runs_on_the_result_before_the_clock_stops():
    clock = FakeClock()
    synced = []

    def sync(out):  # an asynchronous backend finishing its work
        synced.append(out)
        clock.now += 0.25

    t = measure(workload(clock, [1.0, 1.0]), WallClock(clock, sync=sync), warmup=1, repeats=1)
    assert synced == ["out", "out"]
    assert t.values == (1.25,) and t.warmups == (1.25,)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        measure(lambda: None, WallClock(), warmup=-1, repeats=1)
    with pytest.raises(ValueError):
        measure(lambda: None, WallClock(), warmup=0, repeats=0)


def test_real_wall_clock_measures_real_time():
    import time

    t = measure(lambda: time.sleep(0.02), WallClock(), warmup=0, repeats=3)
    assert all(0.019 < v < 0.5 for v in t.values)


def test_clock_per_device():
    assert isinstance(clock_for("cpu"), WallClock)
    assert isinstance(clock_for("cuda"), CudaEventClock)  # constructing needs no GPU
