"""Precision and recall against a brute-force transcription of the k-NN manifold definition."""

import numpy as np
import pytest
import torch

from harness.errors import InputError
from harness.metrics.prdc import precision_recall


def brute_force(ref, smp, k):
    def radii(x):
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def inside(q, c, r):
        d = ((q[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        return np.mean([(d[i] <= r).any() for i in range(len(q))])

    return inside(smp, ref, radii(ref)), inside(ref, smp, radii(smp))


@pytest.mark.parametrize("k,shift", [(3, 0.0), (3, 0.4), (1, 0.2), (5, 0.8)])
def test_equals_brute_force(k, shift):
    rng = np.random.default_rng(k * 10 + int(shift * 10))
    ref = rng.standard_normal((120, 16))
    smp = rng.standard_normal((90, 16)) * 1.3 + shift
    expected = brute_force(ref, smp, k)
    assert precision_recall(ref, smp, k, dtype=torch.float64, block=32) == expected
    assert precision_recall(ref, smp, k) == expected  # float32 default: same decisions here
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # non-trivial cases, not all-in or all-out


def test_identical_sets_are_perfect():
    x = np.random.default_rng(0).standard_normal((40, 8))
    assert precision_recall(x, x) == (1.0, 1.0)


def test_bad_input():
    x = np.zeros((10, 4))
    with pytest.raises(InputError, match="more than 3 sample vectors"):
        precision_recall(x, np.zeros((3, 4)))
    with pytest.raises(InputError, match=r"\(10, 4\) and \(10, 5\)"):
        precision_recall(x, np.zeros((10, 5)))
    with pytest.raises(InputError, match="reference features contain NaN"):
        precision_recall(np.full((10, 4), np.nan), x)
