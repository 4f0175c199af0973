"""How well resampling replicates estimate FID's spread: half-samples against Efron's bootstrap.

For Gaussian features of dimension d (a power-law or a linear spectrum), N samples are drawn
`--trials` times against fixed reference statistics; the standard deviation of FID over those
draws is the truth. Each draw's replicates estimate it: Efron's resampling with replacement
(multinomial counts) and nfebench's random halves (`harness.metrics.bootstrap`). The script
prints the ratio of each estimate (mean over draws) to the truth; 1 is right, above 1
conservative. This is the measurement behind the choice of half-sampling.

    python benchmarks/interval_spread.py [--trials 60] [--replicates 50]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

CASES = [  # (d, N, spectrum)
    (4, 1000, "linear"), (16, 60, "linear"), (64, 40, "linear"), (256, 100, "power"), (256, 1000, "power"),
    (256, 2000, "power"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--replicates", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(1)

    from harness.metrics.bootstrap import frechet_replicates, half_sample_weights
    from harness.metrics.fid import frechet_distance

    print(f"{'d':>5} {'N':>6} {'N/d':>6} {'spectrum':>8} {'sd over draws':>14} {'Efron / sd':>11} {'halves / sd':>12}")
    for d, n, spectrum in CASES:
        rng = np.random.default_rng(d * 7919 + n)
        var = (np.arange(1, d + 1) ** -1.0) * d / 4 if spectrum == "power" else np.linspace(0.5, 2.0, d)
        mu_ref, sigma_ref = np.full(d, 1 / np.sqrt(d)), np.diag(var * 1.2)
        values, efron, halves = [], [], []
        for t in range(args.trials):
            x = rng.standard_normal((n, d)) * np.sqrt(var)
            values.append(frechet_distance(x.mean(0), np.cov(x, rowvar=False), mu_ref, sigma_ref))
            counts = rng.multinomial(n, np.full(n, 1 / n), size=args.replicates).T.astype(np.float64)
            efron.append(np.std(frechet_replicates(x, mu_ref, sigma_ref, counts), ddof=1))
            halves.append(np.std(frechet_replicates(x, mu_ref, sigma_ref, half_sample_weights(n, args.replicates, t)),
                                 ddof=1))
        sd = float(np.std(values, ddof=1))
        print(f"{d:>5} {n:>6} {n / d:>6.2f} {spectrum:>8} {sd:>14.4g} {np.mean(efron) / sd:>11.2f} "
              f"{np.mean(halves) / sd:>12.2f}")


if __name__ == "__main__":
    main()
