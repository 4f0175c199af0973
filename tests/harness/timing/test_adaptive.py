"""Adaptive repeats and alternating rounds on a fake clock: when points stop, in what order
members are called, pairs' ratios, instability under injected noise, failures, memory."""

import itertools

import numpy as np
import pytest

from adapters.api.errors import InputError
from harness.timing.adaptive import (
    BUDGET,
    FAILED,
    LONG_CALL,
    MET,
    REPEATS,
    Budget,
    time_rounds,
)
from harness.timing.clocks import WallClock


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def member(clock, durations, calls=None, name=None):
    """A workload taking the next of `durations` seconds on `clock` (cycled), logging its name."""
    it = itertools.cycle(durations) if isinstance(durations, (list, tuple)) else durations

    def fn():
        if calls is not None:
            calls.append(name)
        clock.now += next(it)

    return fn


def lognormal(seed, median, sigma):
    rng = np.random.default_rng(seed)
    return iter(lambda: float(median * rng.lognormal(0, sigma)), None)


def run(fns, clock, pairs=(), warmup=1, **budget):
    return time_rounds(fns, WallClock(clock), warmup=warmup, budget=Budget(**budget), pairs=pairs)


def test_a_quiet_point_stops_at_five_calls_with_its_interval_met():
    clock = FakeClock()
    r = run({"a": member(clock, lognormal(0, 0.33, 0.01))}, clock, repeats=50, max_time=100.0)
    s = r.members["a"]
    assert len(s.values) == 5 and len(s.warmups) == 1 and s.stop == MET and s.note == ""
    assert s.stable(0.05) and s.half_width() < 0.05


def test_a_noisy_point_times_on_until_its_budget_and_is_unstable():
    clock = FakeClock()
    r = run({"a": member(clock, lognormal(1, 0.33, 0.4))}, clock, repeats=1000, max_time=10.0)
    s = r.members["a"]
    assert s.stop == BUDGET and not s.stable(0.05)
    assert 10.0 <= sum(s.values) < 10.0 + max(s.values)  # stops at the first call that spends the budget
    assert len(s.values) > 5 and s.note.startswith("unstable: half-width") and "10 s budget" in s.note


def test_noise_keeps_timing_until_the_interval_is_tight_enough():
    """Moderate noise: more than five calls, then the interval meets the target within the budget."""
    clock = FakeClock()
    r = run({"a": member(clock, lognormal(2, 0.33, 0.08))}, clock, repeats=1000, max_time=1000.0)
    s = r.members["a"]
    assert s.stop == MET and len(s.values) > 5 and s.half_width() <= 0.05
    # and every shorter prefix of at least 5 calls had not met it yet: it stopped at the first chance
    from harness.timing.stats import median_interval
    for k in range(5, len(s.values)):
        low, high = median_interval(s.values[:k])
        assert (high - low) / 2 / np.median(s.values[:k]) > 0.05


def test_stable_turns_false_when_noise_is_injected():
    quiet, noisy = FakeClock(), FakeClock()
    q = run({"a": member(quiet, lognormal(3, 0.33, 0.01))}, quiet, repeats=20, max_time=5.0).members["a"]
    n = run({"a": member(noisy, lognormal(3, 0.33, 0.6))}, noisy, repeats=20, max_time=5.0).members["a"]
    assert q.stable(0.05) and not n.stable(0.05)


def test_fewer_than_five_calls_only_when_one_call_exceeds_the_budget():
    clock = FakeClock()
    s = run({"a": member(clock, [12.0])}, clock, repeats=20, max_time=10.0).members["a"]
    assert s.values == [12.0] and s.stop == LONG_CALL
    assert s.note == "one call (12 s) exceeds the 10 s budget: n 1, no interval"
    # calls of 4-6 s spend a 10 s budget after 2, yet none exceeds it alone: 5 calls are taken
    clock = FakeClock()
    s = run({"a": member(clock, [4.0, 6.0])}, clock, repeats=20, max_time=10.0).members["a"]
    assert len(s.values) == 5 and s.stop == BUDGET


def test_repeats_caps_the_calls():
    clock = FakeClock()
    s = run({"a": member(clock, lognormal(4, 1.0, 0.5))}, clock, repeats=3, max_time=None).members["a"]
    assert len(s.values) == 3 and s.stop == REPEATS and s.note == "unstable: no interval with n 3 < 5, at --repeats 3"


def test_rounds_alternate_the_order_of_the_members():
    clock, calls = FakeClock(), []
    fns = {"a": member(clock, [0.3], calls, "a"), "b": member(clock, [10.0], calls, "b")}
    r = run(fns, clock, pairs=[("a", "b")], warmup=1, repeats=6, max_time=1000.0)
    # warm-up a b, then timed b a, a b, b a, ...: each model goes first in every other round; the fast
    # a is re-warmed (3 untimed calls: 3 x 0.3 s <= 0.25 x 10 s) wherever it follows b, the slow b never is
    a4 = ["a"] * 4
    assert calls == ["a", "b", "b", *a4, "a", "b", "b", *a4, "a", "b", "b", *a4]
    assert r.order[:2] == [("a", "warmup"), ("b", "warmup")]
    timed = [m for m, p in r.order if p == "timed"]
    assert timed == ["b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert [p for m, p in r.order[2:] if m == "b"] == ["timed"] * 5
    # every timed call of a comes right after a call of a
    assert all(r.order[i - 1][0] == "a" for i, (m, p) in enumerate(r.order) if m == "a" and p == "timed")
    ps = r.pairs[("a", "b")]
    assert ps.fast == pytest.approx([0.3] * 5) and ps.teacher == pytest.approx([10.0] * 5)  # met at 5 rounds
    assert ps.stop == MET and ps.ratio_interval() == (pytest.approx(10 / 0.3),) * 3


def test_a_pair_keeps_its_members_until_the_ratio_is_resolved():
    """The fast model's own interval is met at 5 calls, the teacher's noise keeps the ratio open:
    both stay in the rounds until the pair's budget (both members' budgets together) is spent."""
    clock, calls = FakeClock(), []
    fns = {"a": member(clock, lognormal(5, 0.33, 0.005), calls, "a"),
           "b": member(clock, lognormal(6, 10.0, 0.3), calls, "b")}
    r = run(fns, clock, pairs=[("a", "b")], warmup=0, repeats=100, max_time=60.0)
    a, b, ps = r.members["a"], r.members["b"], r.pairs[("a", "b")]
    assert len(a.values) == len(b.values) == len(ps.fast) > 5  # every call of each is in a paired round
    assert a.stable(0.05) and ps.stop == BUDGET and not ps.stable(0.05)
    assert 120.0 <= sum(ps.fast) + sum(ps.teacher) < 120.0 + 2 * max(ps.teacher)
    assert "120 s budget" in ps.note


def test_when_a_round_exceeds_the_pair_budget_the_fast_model_goes_on_alone():
    """The CI preset: a 10 s teacher call against a 3 s budget. One round, no ratio interval, and
    the fast model still gets its five calls (alone) for its own row."""
    clock, calls = FakeClock(), []
    fns = {"a": member(clock, [0.33], calls, "a"), "b": member(clock, [10.0], calls, "b")}
    r = run(fns, clock, pairs=[("a", "b")], warmup=0, repeats=5, max_time=3.0)
    assert calls == ["a", "b", "a", "a", "a", "a"]
    ps = r.pairs[("a", "b")]
    assert (ps.fast, ps.teacher, ps.stop) == (pytest.approx([0.33]), [10.0], LONG_CALL)
    assert ps.note == "one round (10.3 s) exceeds the 6 s budget: n 1, no interval" and ps.half_width() is None
    assert r.members["a"].stop == MET and r.members["b"].stop == LONG_CALL


def test_a_failing_member_is_dropped_and_the_others_go_on():
    clock, calls = FakeClock(), []

    def broken():
        calls.append("b")
        if len([c for c in calls if c == "b"]) >= 3:
            raise RuntimeError("out of luck")
        clock.now += 1.0

    fns = {"a": member(clock, [0.5], calls, "a"), "b": broken}
    r = run(fns, clock, pairs=[("a", "b")], warmup=1, repeats=5, max_time=100.0)
    assert isinstance(r.members["b"].error, RuntimeError) and r.members["b"].stop == FAILED
    assert r.members["a"].values == pytest.approx([0.5] * 5) and r.pairs[("a", "b")].stop == FAILED
    with pytest.raises(InputError):
        time_rounds({"x": lambda: (_ for _ in ()).throw(InputError("bad input"))}, WallClock(clock), warmup=0,
                    budget=Budget(repeats=3))


def test_memory_is_measured_around_warmup_calls_only():
    clock, seen = FakeClock(), []

    class Region:
        def __init__(self, name):
            self.name, self.mb = name, None

        def __enter__(self):
            seen.append(("enter", self.name, clock.now))

        def __exit__(self, *exc):
            self.mb = 10.0 * len(seen)
            seen.append(("exit", self.name, clock.now))

    fns = {"a": member(clock, [1.0]), "b": member(clock, [2.0])}
    r = time_rounds(fns, WallClock(clock), warmup=2, budget=Budget(repeats=5), pairs=[("a", "b")], memory=Region)
    # warm-up rounds a b, b a: four regions, none after the clock reached the timed calls (t = 6 s)
    assert [(e, n) for e, n, _ in seen] == [("enter", "a"), ("exit", "a"), ("enter", "b"), ("exit", "b"),
                                             ("enter", "b"), ("exit", "b"), ("enter", "a"), ("exit", "a")]
    assert max(t for _, _, t in seen) == 6.0
    # each region's figure is 10 x the events before its exit: a got 10 and 70, b 30 and 50
    assert r.members["a"].peak_mb == 70.0 and r.members["b"].peak_mb == 50.0  # the largest of its regions
    # without warm-up the first timed call of each member carries the region
    seen.clear()
    time_rounds(fns, WallClock(clock), warmup=0, budget=Budget(repeats=5), memory=Region)
    assert [(e, n) for e, n, _ in seen] == [("enter", "a"), ("exit", "a"), ("enter", "b"), ("exit", "b")]


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        time_rounds({"a": lambda: None}, WallClock(), warmup=-1, budget=Budget(repeats=1))
    with pytest.raises(ValueError):
        time_rounds({"a": lambda: None}, WallClock(), warmup=0, budget=Budget(repeats=0))


def test_similar_members_are_not_rewarmed_and_a_failing_rewarm_drops_the_member():
    clock, calls = FakeClock(), []
    fns = {"a": member(clock, [1.0], calls, "a"), "b": member(clock, [1.5], calls, "b")}
    r = run(fns, clock, warmup=1, repeats=5, max_time=1000.0)
    assert {p for _, p in r.order} == {"warmup", "timed"}  # 1.0 > 0.25 x 1.5: a re-warm would not pay
    fns = {"a": member(clock, [1.0]), "b": member(clock, [10.0])}
    r = run(fns, clock, warmup=1, repeats=5, max_time=1000.0)
    assert r.order[2:6] == [("b", "timed"), ("a", "rewarm"), ("a", "rewarm"), ("a", "timed")]  # 2 x 1.0 <= 2.5

    def fails_after_warmup():
        fails_after_warmup.n += 1
        clock.now += 0.1
        if fails_after_warmup.n > 1:
            raise RuntimeError("out of luck")
    fails_after_warmup.n = 0
    r = run({"a": fails_after_warmup, "b": member(clock, [10.0])}, clock, warmup=1, repeats=5, max_time=1000.0)
    assert r.members["a"].error is not None and ("a", "rewarm") in r.order and not r.members["a"].values
    assert len(r.members["b"].values) == 5
