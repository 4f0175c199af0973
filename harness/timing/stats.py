"""Statistics of timed calls: the median with a 95% interval, spread figures, and ratios.

- The median's interval is distribution-free: order statistics, interpolated between the two
  neighbouring pairs as Hettmansperger and Sheather (1986) do, so its coverage is close to 95%
  for any continuous distribution of call times rather than the jumps of the exact binomial
  pairs (with n = 7 the exact choice is 98.4% or 87.5%). Five calls are the fewest that give
  one: with n = 5 it is (min, max), whose coverage is 93.75%, the most five values can give;
  with fewer values there is no interval (None), because (min, max) of four values covers
  the median only 87.5% of the time and calling that a 95% interval would be false.
- A ratio of two timed points (a speed-up) is the ratio of their medians; its interval is a
  percentile bootstrap, resampling paired rounds together when the two were timed in
  alternating rounds (drift then moves both), or each point's calls on their own otherwise.
- Rows of schema 1 carry only a spread (median absolute deviation): `interval_or_spread`
  gives them an interval of ``value +- k * spread`` and says it did.

The intervals assume the calls are independent draws. Calls on a busy machine are not quite
(a burst of other work slows several in a row), which is one more reason to read ``stable``
and ``cv`` beside them.

Example::

    s = summarise([0.331, 0.329, 0.334, 0.330, 0.328])
    s.median, s.ci_low, s.ci_high, s.stable(0.05)      # 0.330, 0.328, 0.334, True
    ratio_interval([9.9, 9.8, 10.1, 9.9, 10.0], [0.33, 0.33, 0.34, 0.33, 0.33])  # (30.0, lo, hi)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LEVEL = 0.95
MIN_CALLS = 5  # the fewest values that give an interval (n = 5: min to max, 93.75%)
DEFAULT_CI_TARGET = 0.05  # a point is stable once its half-width is at most 5% of its median
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same timings always give the same interval
SPREAD_K = 2.0  # schema-1 rows: value +- SPREAD_K x spread stands in for the missing interval


def _coverage(k: int, n: int) -> float:
    """P(x_(k) <= median <= x_(n-k+1)) for n draws of a continuous distribution (1-based k)."""
    below = sum(math.comb(n, i) for i in range(k)) / 2**n  # P(Binomial(n, 1/2) <= k - 1)
    return 1.0 - 2.0 * below


def median_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Distribution-free interval for the median of `values`, or None with fewer than `MIN_CALLS`.

    Args:
        values: independent draws (per-call times).
        level: the coverage asked for.

    Returns:
        (low, high): interpolated order statistics (Hettmansperger-Sheather); with five values
        (min, max), whose coverage 93.75% is the most five values give.

    Example::

        >>> median_interval([3.0, 1.0, 2.0, 5.0, 4.0])
        (1.0, 5.0)
    """
    n = len(values)
    if n < MIN_CALLS:
        return None
    x = sorted(values)
    if _coverage(1, n) < level:  # n = 5: no pair reaches the level; (min, max) comes closest
        return x[0], x[-1]
    k = 1  # the innermost pair (x_(k), x_(n-k+1)) that still covers at least `level`
    while _coverage(k + 1, n) >= level:
        k += 1
    outer, inner = _coverage(k, n), _coverage(k + 1, n)
    share = (outer - level) / (outer - inner)
    lam = (n - k) * share / (k + (n - 2 * k) * share)
    low = (1 - lam) * x[k - 1] + lam * x[k]
    high = (1 - lam) * x[n - k] + lam * x[n - k - 1]
    return low, high


@dataclass(frozen=True)
class Summary:
    """What a row says about a point's per-call values (one unit throughout)."""

    n: int
    median: float
    mad: float | None  # median absolute deviation; None with one value
    ci_low: float | None  # the median's 95% interval; None with fewer than MIN_CALLS values
    ci_high: float | None
    cv: float | None  # standard deviation over mean; None with one value
    p50: float
    p90: float
    p99: float

    @property
    def half_width(self) -> float | None:
        """Half the interval's width relative to the median, or None without an interval."""
        if self.ci_low is None or self.ci_high is None or self.median == 0:
            return None
        return (self.ci_high - self.ci_low) / 2 / abs(self.median)

    def stable(self, target: float) -> bool:
        """True when there is an interval and its half-width is at most `target` x the median."""
        hw = self.half_width
        return hw is not None and hw <= target

    def percentiles(self) -> dict[str, float]:
        """cv and p50/p90/p99, the figures rows keep in their `config`."""
        out = {"p50": self.p50, "p90": self.p90, "p99": self.p99}
        if self.cv is not None:
            out["cv"] = self.cv
        return out


def warning_text(s: Summary) -> str:
    """pyperf's words for a point that missed its target: ``CV 41%, n 2``."""
    return (f"CV {100 * s.cv:.0f}%, " if s.cv is not None else "") + f"n {s.n}"


def summarise(values: Sequence[float]) -> Summary:
    """Median, MAD, 95% interval, CV and percentiles of `values` (at least one).

    p90 and p99 interpolate linearly between the sorted values (numpy's default): with a few
    calls they are the largest values, not estimates of a tail.
    """
    if not values:
        raise ValueError("no values to summarise")
    med = statistics.median(values)
    n = len(values)
    ci = median_interval(values)
    p50, p90, p99 = (float(q) for q in np.percentile(np.asarray(values, dtype=float), [50, 90, 99]))
    mean = statistics.fmean(values)
    cv = statistics.stdev(values) / mean if n > 1 and mean != 0 else None
    mad = statistics.median(abs(v - med) for v in values) if n > 1 else None
    return Summary(n=n, median=med, mad=mad, ci_low=None if ci is None else ci[0],
                   ci_high=None if ci is None else ci[1], cv=cv, p50=p50, p90=p90, p99=p99)


def ratio_interval(numerator: Sequence[float], denominator: Sequence[float], *, paired: bool = True,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                   level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """median(numerator) / median(denominator) and its percentile-bootstrap interval.

    Args:
        numerator, denominator: per-call values of the two points (the slow model's ms per
            image over the fast one's gives the speed-up).
        paired: the i-th values of both were timed in the same round, so rounds are resampled
            together (same length needed); otherwise each side is resampled on its own.
        resamples, seed: bootstrap replicates and their fixed seed.
        level: the coverage asked for.

    Returns:
        (ratio, low, high); low and high are None when either side has fewer than MIN_CALLS
        values (as for `median_interval`).

    Example::

        >>> ratio_interval([10.0, 10.2, 9.9, 10.1, 10.0], [1.0, 1.0, 1.01, 0.99, 1.0])[0]
        10.0
    """
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if paired and len(num) != len(den):
        raise ValueError(f"paired ratio needs as many values on both sides, got {len(num)} and {len(den)}")
    ratio = float(np.median(num) / np.median(den))
    if min(len(num), len(den)) < MIN_CALLS:
        return ratio, None, None
    rng = np.random.default_rng(seed)
    idx_num = rng.integers(0, len(num), size=(resamples, len(num)))
    idx_den = idx_num if paired else rng.integers(0, len(den), size=(resamples, len(den)))
    replicates = np.median(num[idx_num], axis=1) / np.median(den[idx_den], axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    # A percentile interval of a median ratio can, with few skewed rounds, miss the ratio itself;
    # widen it to hold its estimate, as every interval in a run file does (harness.results).
    return ratio, float(min(low, ratio)), float(max(high, ratio))


def interval_or_spread(value: float, ci_low: float, ci_high: float, spread: float,
                       k: float = SPREAD_K) -> tuple[float, float, str] | None:
    """A row's interval (``"interval"``), else ``value +- k * spread`` (``"spread"``, schema-1
    rows), else None (one call: nothing says how far the value may be off). NaN means absent."""
    if math.isfinite(ci_low) and math.isfinite(ci_high):
        return ci_low, ci_high, "interval"
    if math.isfinite(spread):
        return value - k * spread, value + k * spread, "spread"
    return None
