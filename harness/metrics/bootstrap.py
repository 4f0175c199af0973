"""Resampling intervals for Frechet distances and KID, over the generated images' features.

Method: half-sampling. Replicate b is a random half (floor(N / 2) samples, drawn without
replacement, seeded) of the N generated images' stored features, and the statistic is
recomputed on it. For a statistic whose variance falls as 1/N, a random half of N has twice
the variance of the statistic on N, and drawing the halves from one fixed set halves it back
(the finite-population factor 1 - m/N = 1/2), so the spread of the B half-sample values
estimates the spread of the value at N with no rescaling. The 95% interval is
``value +- 1.96 sd`` with ``sd`` the standard deviation of the replicates (the normal
interval: with B = 100 its width is known to about 7%, where the 2.5% and 97.5% quantiles
would rest on 2 or 3 replicates each). Frechet distances are clamped at 0 below.

Why halves rather than Efron's resampling with replacement: a with-replacement resample holds
about 0.63 N distinct images, and where N is near or below the feature dimension FID's value
is dominated by its finite-N bias, which moves with that distinct count. Measured on Gaussian
features against the spread over 60 repeated draws (``benchmarks/interval_spread.py``),
Efron's replicates overstated FID's spread 1.4x at N = 8 d, 1.6-1.8x at N = 4 d and 3.8-5.2x
at N below d; halves 1.16x, 1.2-1.4x and 1.5x. At N = 250 d both came within 16% (the sd of
60 draws is itself known to about 9%). Near and below N = d the intervals are conservative
(too wide, never too narrow in those measurements); FID-50K has N = 24 d.

The reference is held fixed: when it is given as statistics (``mu``/``sigma``) they are all
there is, and when it is given as images it is the same for every model compared against it,
so the interval describes what another draw of the N generated images would give.

It is an interval for the value at this N. FID is biased upwards at finite N (by about
tr(sigma)/N and much more at N below the dimension): FIDs compare at equal N, and the
interval does not move a FID-200 to the FID of infinitely many samples.

Cost of one Frechet replicate, float64 on the features' device: the covariance of the N/2
features of the half in the reference's coordinates, then one symmetric eigenvalue problem
of size min(N/2, rank of the reference covariance). Measured on the 2-core CPU at d = 2048
(``benchmarks/interval_speed.py``): 100 replicates take under a second at N = 200, 0.6 min at
N = 5,000 and 5 min at N = 50,000 (3 s each, after 5 s of setup); on a GPU, seconds.
The reference's factor is the distance's own (`harness.metrics.fid.covariance_factor`), made once
per process.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from adapters.api.errors import InputError
from harness.metrics.fid import covariance_factor

BOOTSTRAP_REPLICATES = 100
BOOTSTRAP_SEED = 0
Z95 = 1.959963984540054  # standard normal 97.5% quantile


def half_sample_weights(n: int, replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Indicators (n, replicates): column b marks the floor(n / 2) samples of random half b.

    Example::

        >>> half_sample_weights(5, 3).sum(axis=0).tolist()
        [2.0, 2.0, 2.0]
    """
    if n < 4 or replicates < 2:
        raise InputError(f"intervals need at least 4 samples and 2 replicates, got {n} and {replicates}")
    rng = np.random.default_rng(seed)
    w = np.zeros((n, replicates))
    for b in range(replicates):
        w[rng.choice(n, n // 2, replace=False), b] = 1.0
    return w


def interval(value: float, replicates: np.ndarray, *, lower: float | None = None) -> tuple[float, float]:
    """The normal bootstrap interval ``value +- 1.96 sd(replicates)``, raised to `lower` if given.

    Example::

        >>> interval(1.0, np.array([0.9, 1.1]), lower=0.0)[0] > 0.7
        True
    """
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if len(reps) < 2:
        return math.nan, math.nan
    half = Z95 * float(np.std(reps, ddof=1))
    lo, hi = value - half, value + half
    return (lo if lower is None else max(lo, lower)), hi


def frechet_replicates(features, mu_ref, sigma_ref, weights: np.ndarray, *,
                       device: str | torch.device | None = None) -> np.ndarray:
    """Frechet distance of each replicate of `features` to the fixed N(mu_ref, sigma_ref).

    The weights count samples: replicate b holds sample i w_ib times (1/0 for a half-sample,
    counts for a with-replacement resample), so its mean and covariance are those of that
    multiset (divisor sum(w) - 1). With F F^T = sigma_ref and y = (x - mean) F, its covariance
    in those coordinates, ``sum_i w_ib (y_i - ybar_b)(y_i - ybar_b)^T / (sum_i w_ib - 1)``, has
    the eigenvalues of sigma_b sigma_ref; their square roots give tr((sigma_b sigma_ref)^1/2) as in
    `harness.metrics.fid.frechet_distance`, whose value weights of 1 reproduce.

    Args:
        features: the generated side's features (N, D).
        mu_ref, sigma_ref: the reference's mean (D,) and covariance (D, D).
        weights: counts (N, B) of each sample in each replicate, e.g. `half_sample_weights`.
        device: where to compute (default: the device of `features` if a tensor, else CPU).

    Returns:
        (B,) float64 distances, each clamped at 0.

    Example::

        reps = frechet_replicates(feats, mu_ref, sigma_ref, half_sample_weights(len(feats)))
        lo, hi = interval(fid, reps, lower=0.0)
    """
    device = device or (features.device if isinstance(features, torch.Tensor) else "cpu")
    x = torch.as_tensor(features).to(device, torch.float64)  # (N, D)
    mu_r = torch.as_tensor(np.asarray(mu_ref), dtype=torch.float64, device=device)  # (D,)
    sigma_r = np.asarray(sigma_ref, dtype=np.float64)  # (D, D); its factor is covariance_factor's
    n = len(x)
    if x.ndim != 2 or x.shape[1] != len(mu_r) or sigma_r.shape != (len(mu_r), len(mu_r)):
        raise InputError(f"features {tuple(x.shape)} and reference statistics of dimension {len(mu_r)} do not fit")
    w_all = torch.as_tensor(np.asarray(weights), dtype=torch.float64, device=device)  # (N, B)
    if w_all.shape[0] != n or bool((w_all.sum(0) < 2).any()):
        raise InputError(f"resampling weights (counts per sample, at least 2 per replicate) are for "
                         f"{w_all.shape[0]} samples, the features for {n}")
    mean = x.mean(0)
    z = x - mean  # (N, D)
    y = z @ covariance_factor(sigma_r).to(device)  # (N, r), F F^T = sigma_ref
    sq_norms = (z * z).sum(1)  # (N,)
    tr_ref = float(np.trace(sigma_r))
    out = np.empty(w_all.shape[1])
    for b in range(w_all.shape[1]):
        w = w_all[:, b]
        total = float(w.sum())  # weights count samples: a replicate of `total` samples
        dz, dy = (w @ z) / total, (w @ y) / total  # replicate mean - full mean, in both coordinates
        shift = mean + dz - mu_r
        tr_cov = float((w @ sq_norms - total * dz @ dz) / (total - 1))
        keep = w > 0
        a = (y[keep] - dy) * (w[keep] / (total - 1)).sqrt()[:, None]  # (n_b, r); a^T a = F^T sigma_b F
        gram = a @ a.T if a.shape[0] < a.shape[1] else a.T @ a  # same non-zero eigenvalues
        eig = torch.linalg.eigvalsh(gram)
        tr_sqrt = float(eig.clamp_min(0).sqrt().sum())
        out[b] = max(float(shift @ shift) + tr_cov + tr_ref - 2 * tr_sqrt, 0.0)
    return out
