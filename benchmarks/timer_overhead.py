"""Timer overhead: the same fixed workload timed by nfebench's timer and by a bare loop.

nfebench's timer (`harness.timing.adaptive.time_rounds`, what the sweep and `measure` use)
puts a clock read pair around each call, and between calls an append, the median's
interval and the stopping checks. This script shows what that costs on a workload of the
size the sweep times. Both timers run in alternating rounds (so machine drift hits both
alike), and the ratio of their mean per-call times is printed (paired rounds, and best round
of each); the target is within 2% of 1. On a machine shared with other work the paired
figure is noisy; the best-round figure is the one to read there. The bookkeeping between
calls is in no timed value; its cost per call is printed apart (wall time of the whole
timer loop over its calls, less the mean timed call).

Run: ``python benchmarks/timer_overhead.py [--device cpu|cuda] [--rounds 5] [--calls 20]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness.timing.adaptive import Budget, time_rounds
from harness.timing.clocks import clock_for


def workload(device: torch.device, size: int):
    """A fixed float32 matmul chain of a few ms: small enough that timer overhead would show."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device)

    def fn() -> torch.Tensor:
        return torch.mm(a, torch.mm(a, a))

    return fn


def bare_loop(fn, calls: int, device: torch.device) -> float:
    """Mean seconds per call of a plain loop with one clock pair around it all."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=256, help="matrix side of the workload")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=30, help="calls per round and timer")
    args = p.parse_args()
    device = torch.device(args.device)
    fn = workload(device, args.size)
    clock = clock_for(device)
    for _ in range(5):  # warm caches and the allocator once for both
        fn()
    ours, bare, between = [], [], []
    budget = Budget(repeats=args.calls, min_calls=args.calls)  # exactly `calls` calls, whatever the interval says
    for _ in range(args.rounds):
        start = time.perf_counter()
        values = time_rounds({"fn": fn}, clock, warmup=0, budget=budget).members["fn"].values
        between.append((time.perf_counter() - start) / args.calls - statistics.fmean(values))
        ours.append(statistics.fmean(values))
        bare.append(bare_loop(fn, args.calls, device))
    ratio = statistics.median(o / b for o, b in zip(ours, bare))
    best = min(ours) / min(bare)  # the least disturbed round of each: robust to a busy machine
    print(f"workload: {args.size}x{args.size} float32 matmul x2 on {device}, {args.rounds} rounds x {args.calls} calls")
    print(f"nfebench timer: {1e3 * statistics.median(ours):.3f} ms/call median, {1e3 * min(ours):.3f} best round")
    print(f"bare loop:      {1e3 * statistics.median(bare):.3f} ms/call median, {1e3 * min(bare):.3f} best round")
    for label, r in (("median of paired rounds", ratio), ("best rounds", best)):
        verdict = "within" if abs(r - 1) <= 0.02 else "outside"
        print(f"ratio nfebench/bare ({label}): {r:.4f}, {verdict} the 2% target")
    print(f"bookkeeping between calls (interval, stopping checks; in no timed value): "
          f"{1e6 * statistics.median(between):.0f} us per call")

if __name__ == "__main__":
    main()
