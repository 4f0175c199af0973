"""Resampling intervals: replicates are the statistic of the resampled set, and the 95% intervals
cover what they claim to on synthetic Gaussians (closed-form Frechet distance) and for KID."""

import numpy as np
import pytest
import torch

from adapters.api.errors import InputError
from harness.metrics.bootstrap import Z95, frechet_replicates, half_sample_weights, interval
from harness.metrics.fid import frechet_distance
from harness.metrics.kid import kid

TRIALS = 200  # coverage of a true 95% interval: 0.95 +- 0.015 (binomial sd) over 200 trials


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny eigenproblems: threads only add overhead
    yield
    torch.set_num_threads(threads)


def fd_of(x, mu_ref, sigma_ref):
    return frechet_distance(x.mean(0), np.cov(x, rowvar=False), mu_ref, sigma_ref)


@pytest.mark.parametrize("n,d,singular_ref", [(30, 8, False), (10, 24, False), (12, 24, True)])
def test_replicates_are_the_distance_of_the_resampled_set(n, d, singular_ref):
    """Half-samples and with-replacement counts alike, through both eigenproblem sizes (N below
    and above the dimension) and a singular reference (fewer reference images than dimensions).
    Tolerance 1e-6: with a singular covariance the square roots of eigenvalues that rounding
    leaves at ~1e-16 add ~1e-8 each, whichever way the eigenproblem is posed."""
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d) + 0.3
    ref = rng.standard_normal((d // 2 if singular_ref else 4 * d, d))
    mu_r, sigma_r = ref.mean(0), np.cov(ref, rowvar=False)
    ones = np.ones((n, 2))
    np.testing.assert_allclose(frechet_replicates(x, mu_r, sigma_r, ones), fd_of(x, mu_r, sigma_r), rtol=1e-6)
    halves = half_sample_weights(n, 3, seed=1)
    expected = [fd_of(x[halves[:, b] > 0], mu_r, sigma_r) for b in range(3)]
    np.testing.assert_allclose(frechet_replicates(x, mu_r, sigma_r, halves), expected, rtol=1e-6)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=2).T.astype(float)  # Efron's resamples
    expected = [fd_of(np.repeat(x, counts[:, b].astype(int), axis=0), mu_r, sigma_r) for b in range(2)]
    np.testing.assert_allclose(frechet_replicates(x, mu_r, sigma_r, counts), expected, rtol=1e-6)


def diagonal_case(d, shift):
    a, b = np.linspace(0.5, 2.0, d), np.linspace(1.0, 1.5, d)  # sample and reference variances
    mu_ref = np.full(d, shift / np.sqrt(d))
    exact = shift ** 2 + float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())  # closed form for commuting covariances
    return a, mu_ref, np.diag(b), exact


def trials(d, n, shift, replicates=100):
    a, mu_ref, sigma_ref, exact = diagonal_case(d, shift)
    rng = np.random.default_rng(d * 1000 + n)
    values, intervals = [], []
    for t in range(TRIALS):
        x = rng.standard_normal((n, d)) * np.sqrt(a)
        value = fd_of(x, mu_ref, sigma_ref)
        reps = frechet_replicates(x, mu_ref, sigma_ref, half_sample_weights(n, replicates, seed=t))
        values.append(value)
        intervals.append(interval(value, reps, lower=0.0))
    return np.array(values), np.array(intervals), exact


def covered(intervals, target):
    return float(np.mean((intervals[:, 0] <= target) & (target <= intervals[:, 1])))


def test_intervals_cover_the_closed_form_frechet_distance():
    """N much larger than d: the finite-N bias (~tr(sigma)/N) is small beside the spread, so the
    interval for the value at N also covers the exact distance of the two Gaussians."""
    values, intervals, exact = trials(d=4, n=1000, shift=1.0)
    assert 0.90 <= covered(intervals, exact) <= 0.99
    width, spread = np.mean(intervals[:, 1] - intervals[:, 0]), 2 * Z95 * values.std()
    assert 0.8 <= width / spread <= 1.25  # as wide as the spread over repeated draws


def test_at_small_n_the_interval_is_for_the_value_at_that_n():
    """N = 3.75 d: FID-60 is biased far above the exact distance; the interval covers its
    expectation at N = 60 (estimated over the trials), not the exact distance, and is conservative."""
    values, intervals, exact = trials(d=16, n=60, shift=1.0)
    assert values.mean() > 2 * exact  # the bias the interval does not remove
    assert covered(intervals, values.mean()) >= 0.93
    assert covered(intervals, exact) < 0.1
    width, spread = np.mean(intervals[:, 1] - intervals[:, 0]), 2 * Z95 * values.std()
    assert 1.0 <= width / spread <= 1.6  # measured 1.32; Efron's with replacement: 1.6 (interval_spread.py)


def test_kid_intervals_cover_its_expectation():
    """KID is unbiased: over repeated draws of the samples (reference fixed), the intervals cover
    the mean KID. Features are Inception-like (non-negative, d = 64)."""
    rng = np.random.default_rng(1)
    d, n = 64, 300
    ref = np.abs(rng.standard_normal((500, d)) * 0.4 + 0.3)
    values, intervals = [], []
    for t in range(TRIALS):
        x = np.abs(rng.standard_normal((n, d)) * 0.45 + 0.35)
        r = kid(x, ref, subsets=20, subset_size=100, weights=half_sample_weights(n, 100, seed=t), dtype=torch.float64)
        values.append(r.mean)
        intervals.append(interval(r.mean, r.replicates))
    values, intervals = np.array(values), np.array(intervals)
    assert values.mean() > 4 * values.std() / np.sqrt(TRIALS)  # a clearly non-zero KID: the sets differ
    assert 0.90 <= covered(intervals, values.mean()) <= 0.99
    width, spread = np.mean(intervals[:, 1] - intervals[:, 0]), 2 * Z95 * values.std()
    assert 0.8 <= width / spread <= 1.3


def test_half_samples_and_intervals():
    w = half_sample_weights(9, 4, seed=3)
    assert w.shape == (9, 4) and set(np.unique(w)) == {0.0, 1.0} and (w.sum(0) == 4).all()
    assert not np.array_equal(w[:, 0], w[:, 1])
    np.testing.assert_array_equal(half_sample_weights(9, 4, seed=3), w)  # seeded: reproducible intervals
    lo, hi = interval(1.0, np.array([0.5, 1.5, np.nan]))
    assert (lo, hi) == pytest.approx((1 - Z95 * np.std([0.5, 1.5], ddof=1), 1 + Z95 * np.std([0.5, 1.5], ddof=1)))
    assert interval(0.1, np.array([0.0, 1.0]), lower=0.0)[0] == 0.0
    assert all(np.isnan(interval(1.0, np.array([np.nan, 2.0]))))
    with pytest.raises(InputError, match="at least 4 samples"):
        half_sample_weights(3, 10)
