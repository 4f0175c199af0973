"""Cost of FID's interval: seconds per half-sample replicate of `frechet_replicates` at 2048 dimensions.

Synthetic Inception-like features (N x 2048, non-negative) against a fixed reference of 10,000
(positive definite, as ADM's reference batch). At each N one replicate and then `--replicates`
are timed; the difference gives the cost per replicate apart from the one-off setup (factoring
the reference, moving the features into its coordinates), and the cost of the default 100.

    python benchmarks/interval_speed.py [--sizes 200,5000,50000] [--replicates 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="200,5000,50000")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--replicates", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from harness.metrics.bootstrap import BOOTSTRAP_REPLICATES, frechet_replicates, half_sample_weights

    rng = np.random.default_rng(0)
    ref = np.abs(rng.standard_normal((10_000, args.dim), dtype=np.float32) * 0.4 + 0.3).astype(np.float64)
    mu_ref, sigma_ref = ref.mean(0), np.cov(ref, rowvar=False)
    print(f"d={args.dim}, device {args.device}, {args.threads} thread(s)")
    for n in (int(s) for s in args.sizes.split(",")):
        x = np.abs(rng.standard_normal((n, args.dim), dtype=np.float32) * 0.4 + 0.31)
        w = half_sample_weights(n, args.replicates)
        frechet_replicates(x[:64], mu_ref, sigma_ref, w[:64], device=args.device)  # warm-up
        times = []
        for reps in (1, args.replicates):
            t0 = time.perf_counter()
            frechet_replicates(x, mu_ref, sigma_ref, w[:, :reps], device=args.device)
            times.append(time.perf_counter() - t0)
        per = (times[1] - times[0]) / (args.replicates - 1)
        setup = times[0] - per
        print(f"N={n:>6}: setup {setup:6.2f} s, {per:6.2f} s per replicate; {BOOTSTRAP_REPLICATES} replicates "
              f"~ {(setup + per * BOOTSTRAP_REPLICATES) / 60:5.1f} min")

if __name__ == "__main__":
    main()
