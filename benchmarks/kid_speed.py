"""KID at FID-50K scale: nfebench's `harness.metrics.kid.kid` against torch-fidelity's
``kid_features_to_metric`` on the same features and the same subsets (100 of 1000, seed 2020).

The features are synthetic, Inception-like (non-negative, 2048-d): 50,000 samples against a
10,000-image reference (ADM's reference batch size). Each implementation is timed once per
round, rounds interleaved, the best round counting. Both must give the same KID; the script
prints both values, the best times
and the ratio. ``--intervals`` also times the 100 half-sample replicates of the interval.

    python benchmarks/kid_speed.py [--samples 50000] [--reference 10000] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.standard_normal((n, d), dtype=np.float32) * 0.4 + 0.3 + shift)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--reference", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--subsets", type=int, default=100)
    p.add_argument("--subset-size", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2, help="torch and BLAS threads (the CI machine has 2 cores)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both; the best of each counts")
    p.add_argument("--intervals", action="store_true", help="also time the 100 half-sample replicates")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    from harness.metrics.bootstrap import half_sample_weights
    from harness.metrics.kid import KID_SEED, kid

    a = features(0, args.samples, args.dim, 0.01)
    b = features(1, args.reference, args.dim)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    kw = dict(subsets=args.subsets, subset_size=args.subset_size, device=args.device)
    kid(a[:2000], b[:2000], subsets=2, subset_size=args.subset_size, device=args.device)  # warm-up
    ours, theirs, ours_s, theirs_s = None, None, float("inf"), float("inf")
    for r in range(args.rounds):  # interleaved, alternating who goes first: load drift hits both
        for who in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
            t0 = time.perf_counter()
            if who == "ours":
                ours = kid(a, b, **kw)
                ours_s = min(ours_s, time.perf_counter() - t0)
            else:
                theirs = kid_features_to_metric(ta, tb, kid_subsets=args.subsets, kid_subset_size=args.subset_size,
                                                rng_seed=KID_SEED, verbose=False)
                theirs_s = min(theirs_s, time.perf_counter() - t0)
    print(f"KID of {args.samples} x {args.dim} samples vs {args.reference} reference, {args.subsets} subsets of "
          f"{args.subset_size}, {args.threads} thread(s), device {args.device}")
    print(f"nfebench       KID {ours.mean:.9g} +- {ours.std:.3g}   {ours_s:7.2f} s")
    print(f"torch-fidelity KID {theirs[KEY_METRIC_KID_MEAN]:.9g}            {theirs_s:7.2f} s")
    print(f"relative difference {abs(ours.mean - theirs[KEY_METRIC_KID_MEAN]) / abs(theirs[KEY_METRIC_KID_MEAN]):.2e}; "
          f"ratio torch-fidelity / nfebench time: {theirs_s / ours_s:.2f}")
    if args.intervals:
        weights = half_sample_weights(args.samples)
        t0 = time.perf_counter()
        with_reps = kid(a, b, weights=weights, **kw)
        print(f"with 100 half-sample replicates (the interval): {time.perf_counter() - t0:.2f} s, "
              f"sd {np.std(with_reps.replicates, ddof=1):.3g}")


if __name__ == "__main__":
    main()
