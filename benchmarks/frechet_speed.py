"""Frechet distance at 2048 dimensions: nfebench's eigenvalue form against scipy's sqrtm formula.

Prints both times, their ratio and the relative difference of the two distances. Both run
in float64 on the same random covariances (full rank, as FID-50K statistics are; add
``--samples 1000`` for a singular sample covariance).

    python benchmarks/frechet_speed.py [--dim 2048] [--samples 4096] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg

from harness.metrics.fid import frechet_distance


def sqrtm_frechet(mu1, s1, mu2, s2) -> float:
    """The ADM evaluator's formula (scipy.linalg.sqrtm of sigma1 @ sigma2)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def best_time(fn, repeat: int) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--samples", type=int, default=4096, help="vectors behind each covariance")
    p.add_argument("--repeat", type=int, default=3, help="runs per method; the fastest counts")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    stats = []
    for scale in (1.0, 1.5):
        x = rng.standard_normal((args.samples, args.dim)) @ rng.standard_normal((args.dim, args.dim)) / 45 * scale
        stats += [x.mean(0), np.cov(x, rowvar=False)]
    t_ours, ours = best_time(lambda: frechet_distance(*stats), args.repeat)
    t_ref, ref = best_time(lambda: sqrtm_frechet(*stats), args.repeat)
    print(f"dim {args.dim}, {args.samples} samples per side, best of {args.repeat}")
    print(f"nfebench frechet_distance  {t_ours:8.3f} s   {ours:.10g}")
    print(f"scipy sqrtm formula        {t_ref:8.3f} s   {ref:.10g}")
    print(f"relative difference {abs(ours - ref) / abs(ref):.2e}")
    print(f"speed ratio (sqrtm / nfebench): {t_ref / t_ours:.1f}x")


if __name__ == "__main__":
    main()
