"""Adaptive repeats, and points timed together in alternating rounds.

`time_rounds` times a group of workloads ("members": the models of one pair at one batch
size and decode setting, or a single model) in rounds: one call of each member per round,
the order reversed every round (A B, B A, A B, ...), so drift of the machine (another job
starting, the clock changing) falls on both alike. A pair's ratio is then measured from
the same calls that give each member its own statistics, so nothing is timed twice.

When to stop (`Budget`), per member and per pair:

- a member keeps being called until its median's 95% interval has a half-width of at most
  ``ci_target`` x the median (`harness.timing.stats`), or its timed calls add up to
  ``max_time`` seconds, or it has had ``repeats`` calls;
- a pair keeps both its members in the rounds until the interval of its ratio is as tight,
  or its rounds add up to its two members' budgets together (2 x ``max_time``), or
  ``repeats`` rounds;
- either way at least ``min_calls`` (5) calls, the fewest that give an interval, unless one
  call (for a pair: one round) by itself exceeds the budget: then it stops there, and its
  note says so.

A call that follows another member's runs cold: the other model's working set has pushed its
weights and activations out of the caches and the allocator's free lists (measured on 2 CPU
cores: BiFlow-B/2 at batch 1 took 446 ms right after iTARFlow-B/2 against 336 ms alone, so its
speed-up came out 25% low; one untimed call in between still left it at 350-390 ms, two or
three brought it to 330). So before a timed call that follows another member's, up to
`MAX_REWARM` untimed calls of the same member (phase ``"rewarm"``) bring it back to its steady
state, as many as cost at most `REWARM_SHARE` of the rest of the round: the slow member of a
pair is not re-warmed, as a cold start is a small part of its long call.

Warm-up rounds come first (same alternation) and never enter the statistics; peak memory
is measured around each member's warm-up calls (or its first timed call without warm-up),
never around a timed call, because resetting the peak (`harness.timing.memory`) returns
freed memory to the system and the next call would pay to fault it back in.

A member whose call raises is dropped from the rounds, with its exception kept (drop the
`Rounds` before freeing device memory: the traceback holds the call's tensors); the others
go on (`InputError` and `KeyboardInterrupt` stop everything).

Example::

    rounds = time_rounds({"a": fast_fn, "b": slow_fn}, WallClock(), warmup=1,
                         budget=Budget(repeats=20, max_time=10.0), pairs=[("a", "b")])
    rounds.members["a"].values, rounds.pairs[("a", "b")].ratio_interval()
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Mapping, Sequence

from adapters.api.errors import InputError
from harness.timing.stats import (
    DEFAULT_CI_TARGET,
    MIN_CALLS,
    median_interval,
    ratio_interval,
)

# Before a timed call that follows another member's call, a member gets as many untimed calls
# (at most MAX_REWARM) as cost at most REWARM_SHARE of the other members' calls in the round.
REWARM_SHARE, MAX_REWARM = 0.25, 3

# Why a member or pair stopped.
MET, REPEATS, BUDGET, LONG_CALL, FAILED = "interval met", "repeats reached", "budget spent", "call over budget", "failed"


@dataclass(frozen=True)
class Budget:
    """How long a point is timed.

    Args:
        repeats: the most timed calls of a member (rounds of a pair).
        max_time: seconds of timed calls a member may spend (a pair: twice that); None: no limit.
        ci_target: stop once the interval's half-width is at most this fraction of the median.
        min_calls: calls before the interval may stop it (fewer only when one call exceeds the budget).
    """

    repeats: int
    max_time: float | None = None
    ci_target: float = DEFAULT_CI_TARGET
    min_calls: int = MIN_CALLS


def _half_width(interval: tuple[float, float] | None, centre: float) -> float | None:
    if interval is None or centre == 0:
        return None
    return (interval[1] - interval[0]) / 2 / abs(centre)


def _stop(n: int, spent: float, longest: float, half_width: float | None, budget: Budget, scale: int) -> str:
    """Why a series of `n` timed calls (rounds) stops now, or "" to go on; `scale` members share the budget."""
    if n >= budget.min_calls and half_width is not None and half_width <= budget.ci_target:
        return MET
    if n >= budget.repeats:
        return REPEATS
    if budget.max_time is not None:
        limit = budget.max_time * scale
        if n < budget.min_calls and longest > limit:
            return LONG_CALL
        if n >= budget.min_calls and spent >= limit:
            return BUDGET
    return ""


def _note(what: str, stop: str, n: int, half_width: float | None, budget: Budget, longest: float, scale: int) -> str:
    """The row note of a series that did not meet its target ("" when it did)."""
    limit = None if budget.max_time is None else f"{budget.max_time * scale:g} s"
    if stop == MET:
        return ""
    if stop == LONG_CALL:
        return f"one {what} ({longest:.3g} s) exceeds the {limit} budget: n {n}, no interval"
    when = f"when the {limit} budget was spent" if stop == BUDGET else f"at --repeats {budget.repeats}"
    if half_width is None:
        return f"unstable: no interval with n {n} < {MIN_CALLS}, {when}"
    return (f"unstable: half-width {100 * half_width:.1f}% of the median > {100 * budget.ci_target:g}% "
            f"{when} (n {n})")


@dataclass
class Series:
    """One member's calls: seconds per timed call and per warm-up call, and why it stopped."""

    values: list[float] = field(default_factory=list)
    warmups: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    stop: str = ""
    note: str = ""
    error: Exception | None = None

    def half_width(self) -> float | None:
        """The median's interval half-width over the median; None without an interval."""
        return _half_width(median_interval(self.values), statistics.median(self.values)) if self.values else None

    def stable(self, target: float) -> bool:
        hw = self.half_width()
        return hw is not None and hw <= target


@dataclass
class PairSeries:
    """The rounds in which both members of a pair were called: seconds of each, round by round."""

    fast: list[float] = field(default_factory=list)
    teacher: list[float] = field(default_factory=list)
    stop: str = ""
    note: str = ""

    def ratio_interval(self) -> tuple[float, float | None, float | None]:
        """teacher / fast (the speed-up) with its paired-bootstrap interval."""
        return ratio_interval(self.teacher, self.fast, paired=True)

    def half_width(self) -> float | None:
        """The ratio's interval half-width over the ratio; None without an interval."""
        if len(self.fast) < MIN_CALLS:
            return None
        ratio, low, high = self.ratio_interval()
        return _half_width((low, high), ratio)

    def stable(self, target: float) -> bool:
        hw = self.half_width()
        return hw is not None and hw <= target


@dataclass
class Rounds:
    members: dict[str, Series]
    pairs: dict[tuple[str, str], PairSeries]
    order: list[tuple[str, str]]  # (member, "warmup" | "rewarm" | "timed") in call order, for the record and tests


def time_rounds(calls: Mapping[str, Callable[[], Any]], clock, *, warmup: int, budget: Budget,
                pairs: Sequence[tuple[str, str]] = (),
                memory: Callable[[str], ContextManager] | None = None) -> Rounds:
    """Time `calls` in alternating rounds until each member and each pair may stop (see the module text).

    Args:
        calls: member name -> zero-argument workload (inputs prepared outside it).
        clock: times one call (`harness.timing.clocks`).
        warmup: untimed rounds first.
        budget: repeats, time budget, interval target.
        pairs: (fast, teacher) member pairs whose ratio is measured from shared rounds.
        memory: member name -> a fresh context manager with an ``mb`` attribute after exit
            (`PeakMemory`), entered around the member's warm-up calls (or its first timed call).

    Returns:
        `Rounds`: per member a `Series`, per pair a `PairSeries`.
    """
    if warmup < 0 or budget.repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {budget.repeats}")
    members = {m: Series() for m in calls}
    pair_series = {p: PairSeries() for p in pairs}
    order: list[tuple[str, str]] = []
    round_no = 0

    def call(m: str, phase: str) -> float | None:
        s = members[m]
        measure_memory = memory is not None and (phase == "warmup" or (warmup == 0 and not s.values))
        region = memory(m) if measure_memory else contextlib.nullcontext()
        order.append((m, phase))
        try:
            with region:
                t = clock.time_call(calls[m])
        except InputError:
            raise
        except Exception as exc:  # this member stops; the others go on
            s.error, s.stop = exc, FAILED
            return None
        if measure_memory and getattr(region, "mb", None) is not None:
            s.peak_mb = max(s.peak_mb or 0.0, region.mb)
        return t

    def member_stop(m: str) -> str:
        s = members[m]
        return _stop(len(s.values), sum(s.values), max(s.values, default=0.0), s.half_width(), budget, 1)

    def pair_stop(p: tuple[str, str]) -> str:
        if members[p[0]].error is not None or members[p[1]].error is not None:
            return FAILED
        ps = pair_series[p]
        sums = [a + b for a, b in zip(ps.fast, ps.teacher)]
        return _stop(len(sums), sum(sums), max(sums, default=0.0), ps.half_width(), budget, 2)

    for _ in range(warmup):
        for m in _ordered([m for m in members if members[m].error is None], round_no):
            t = call(m, "warmup")
            if t is not None:
                members[m].warmups.append(t)
        round_no += 1

    while True:
        open_pairs = [p for p in pairs if not pair_stop(p)]
        active = [m for m in members if members[m].error is None
                  and (not member_stop(m) or any(m in p for p in open_pairs))]
        if not active:
            break
        times: dict[str, float] = {}
        for m in _ordered(active, round_no):
            if order and order[-1][0] != m:
                for _ in range(_rewarm_calls(m, active, members)):
                    if call(m, "rewarm") is None:
                        break
                if members[m].error is not None:
                    continue
            t = call(m, "timed")
            if t is not None:
                times[m] = t
                members[m].values.append(t)
        for p in open_pairs:
            if p[0] in times and p[1] in times:
                pair_series[p].fast.append(times[p[0]])
                pair_series[p].teacher.append(times[p[1]])
        round_no += 1

    # Every member and pair has a reason to stop here, or the loop would not have ended.
    for m, s in members.items():
        if s.error is None:
            s.stop = member_stop(m)
            s.note = _note("call", s.stop, len(s.values), s.half_width(), budget, max(s.values), 1)
    for p, ps in pair_series.items():
        ps.stop = pair_stop(p)
        if ps.stop != FAILED:
            sums = [a + b for a, b in zip(ps.fast, ps.teacher)]
            ps.note = _note("round", ps.stop, len(sums), ps.half_width(), budget, max(sums, default=0.0), 2)
    return Rounds(members, pair_series, order)


def _last_call(s: Series) -> float | None:
    return s.values[-1] if s.values else (s.warmups[-1] if s.warmups else None)


def _rewarm_calls(m: str, active: list[str], members: Mapping[str, Series]) -> int:
    """How many untimed calls of `m` to make before its timed one: as many as cost at most
    `REWARM_SHARE` of the other members' calls (their latest calls stand for what they take), up to
    `MAX_REWARM`; 0 while a call time is unknown (no call yet)."""
    own = _last_call(members[m])
    others = [_last_call(members[o]) for o in active if o != m]
    if not own or not others or any(t is None for t in others):
        return 0
    return min(MAX_REWARM, int(REWARM_SHARE * sum(others) / own))


def _ordered(active: list[str], round_no: int) -> list[str]:
    """Round r calls the members in their order when r is even, reversed when odd (A B, B A, ...)."""
    return active if round_no % 2 == 0 else active[::-1]
