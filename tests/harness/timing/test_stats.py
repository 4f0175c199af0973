"""The median's interval and the ratio's bootstrap: coverage on synthetic samples of known
distributions (fixed seeds), exact small cases, and the schema-1 fallback."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from harness.timing.stats import (
    MIN_CALLS,
    _coverage,
    interval_or_spread,
    median_interval,
    ratio_interval,
    summarise,
)

# "About 95%": over TRIALS samples the coverage lies in this window (binomial sd at 95% and
# 4000 trials is 0.34%, so the window is far wider than chance and still fails a 90% or a 99% method).
WINDOW = (0.92, 0.98)
TRIALS = 4000


def coverage(draw, true_median, n, trials=TRIALS, seed=0):
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        low, high = median_interval(draw(rng, n))
        hits += low <= true_median <= high
    return hits / trials


DISTRIBUTIONS = {
    # per-call times are skewed to the right: lognormal is the usual model of them
    "lognormal": (lambda rng, n: rng.lognormal(mean=math.log(0.33), sigma=0.3, size=n), 0.33),
    "exponential+offset": (lambda rng, n: 1.0 + rng.exponential(0.2, size=n), 1.0 + 0.2 * math.log(2)),
    "normal": (lambda rng, n: rng.normal(10.0, 0.5, size=n), 10.0),
}


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
@pytest.mark.parametrize("n", [5, 6, 7, 9, 12, 20, 40])
def test_median_interval_covers_about_95_percent(name, n):
    draw, true_median = DISTRIBUTIONS[name]
    assert WINDOW[0] <= coverage(draw, true_median, n) <= WINDOW[1]


def test_the_exact_order_statistic_pairs_would_not():
    # Why interpolate: the exact binomial pair at n = 7 covers 98.4% (x1, x7) or 87.5% (x2, x6).
    assert _coverage(1, 7) == pytest.approx(0.984375) and _coverage(2, 7) == pytest.approx(0.875)
    assert _coverage(1, 5) == pytest.approx(0.9375)  # n = 5: (min, max), the best five values give


def test_binomial_coverage_matches_scipy():
    for n in (5, 8, 13, 30):
        for k in range(1, n // 2 + 1):
            assert _coverage(k, n) == pytest.approx(1 - 2 * scipy_stats.binom.cdf(k - 1, n, 0.5))


def test_small_samples_have_no_interval_and_five_give_min_to_max():
    assert median_interval([1.0, 2.0, 3.0, 4.0]) is None
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)
    assert MIN_CALLS == 5
    low, high = median_interval(list(range(1, 21)))  # n = 20: between (x6, x15) and (x7, x14)
    assert 6 <= low <= 7 and 14 <= high <= 15 and low + high == pytest.approx(21)  # symmetric for a symmetric sample


def test_summary_figures():
    s = summarise([1.0, 2.0, 3.0, 4.0, 9.0])
    assert (s.n, s.median, s.mad, s.ci_low, s.ci_high) == (5, 3.0, 1.0, 1.0, 9.0)
    assert s.cv == pytest.approx(np.std([1, 2, 3, 4, 9], ddof=1) / 3.8)
    assert (s.p50, s.p90, s.p99) == (3.0, pytest.approx(7.0), pytest.approx(8.8))
    assert s.half_width == pytest.approx(8 / 2 / 3) and not s.stable(0.05)
    one = summarise([2.0])
    assert one.ci_low is None and one.cv is None and one.mad is None and not one.stable(0.5)
    assert set(summarise([1.0, 1.01, 0.99, 1.0, 1.0]).percentiles()) == {"cv", "p50", "p90", "p99"}


def test_ratio_is_the_ratio_of_medians_and_its_interval_holds_it():
    slow, fast = [10.0, 10.4, 9.6, 10.2, 9.8], [0.50, 0.51, 0.49, 0.52, 0.48]
    ratio, low, high = ratio_interval(slow, fast)
    assert ratio == pytest.approx(20.0) and low < 20.0 < high
    assert ratio_interval(slow, fast) == (ratio, low, high)  # fixed seed: the same timings, the same interval
    assert ratio_interval(slow[:4], fast[:4])[1:] == (None, None)
    with pytest.raises(ValueError, match="as many values"):
        ratio_interval(slow, fast[:4])


@pytest.mark.parametrize("n", [5, 10, 20])
def test_paired_ratio_interval_covers_about_95_percent(n):
    """Paired rounds with no drift: the percentile bootstrap of the ratio of medians covers about 95%."""
    rng = np.random.default_rng(1)
    hits = 0
    trials = 1500
    for _ in range(trials):
        fast = 0.33 * rng.lognormal(0, 0.1, n)
        slow = 10.0 * rng.lognormal(0, 0.1, n)
        _, low, high = ratio_interval(slow, fast, resamples=1000, seed=int(rng.integers(1 << 31)))
        hits += low <= 10.0 / 0.33 <= high
    assert WINDOW[0] <= hits / trials <= WINDOW[1]


def test_pairing_removes_shared_drift():
    """The machine slows down round by round: paired resampling keeps each round's two calls together."""
    rng = np.random.default_rng(2)
    drift = np.linspace(1.0, 2.0, 12)  # the second half of the run is up to 2x slower, for both models
    fast = 0.33 * drift * rng.lognormal(0, 0.02, 12)
    slow = 10.0 * drift * rng.lognormal(0, 0.02, 12)
    _, p_low, p_high = ratio_interval(slow, fast, paired=True)
    _, u_low, u_high = ratio_interval(slow, fast, paired=False)
    assert p_low <= 10 / 0.33 <= p_high
    assert (p_high - p_low) < 0.5 * (u_high - u_low)  # drift is noise to unpaired resampling, not to paired


def test_schema_1_rows_fall_back_to_the_spread():
    nan = math.nan
    assert interval_or_spread(10.0, 9.0, 11.5, 0.2) == (9.0, 11.5, "interval")
    assert interval_or_spread(10.0, nan, nan, 0.5) == (9.0, 11.0, "spread")
    assert interval_or_spread(10.0, nan, nan, 0.5, k=3) == (8.5, 11.5, "spread")
    assert interval_or_spread(10.0, nan, nan, nan) is None
