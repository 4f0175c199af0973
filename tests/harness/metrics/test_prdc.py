"""Precision and recall against a brute-force transcription of the k-NN manifold definition;
all four of precision, recall, density and coverage against the `prdc` package (Naeem et al.)."""

import numpy as np
import pytest
import torch

from adapters.api.errors import InputError
from harness.metrics.prdc import manifold_metrics, precision_recall


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


@pytest.mark.parametrize("k,shift,scale", [(3, 0.0, 1.0), (3, 0.5, 1.3), (5, 0.3, 0.7), (2, 1.0, 1.0)])
def test_density_and_coverage_equal_the_prdc_package(k, shift, scale, capsys):
    from prdc import compute_prdc

    rng = np.random.default_rng(100 + k + int(10 * shift))
    ref = rng.standard_normal((150, 12))
    smp = rng.standard_normal((110, 12)) * scale + shift
    theirs = compute_prdc(real_features=ref, fake_features=smp, nearest_k=k)
    capsys.readouterr()  # prdc prints the set sizes
    ours = manifold_metrics(ref, smp, k, dtype=torch.float64, block=40)
    assert set(ours) == {"precision", "recall", "density", "coverage"}
    for name in ours:  # the same decisions: no distance ties a radius in continuous data
        assert ours[name] == pytest.approx(float(theirs[name]), rel=1e-12, abs=1e-12), name
    assert 0 < ours["coverage"] < 1 and ours["density"] > 0  # non-trivial: not all-in or all-out
    assert manifold_metrics(ref, smp, k) == pytest.approx(ours, rel=1e-12)  # float32 default: same decisions


def test_density_counts_balls_coverage_counts_reference_points():
    """Hand-made case: three reference points on a line with k=1 balls, samples placed inside them."""
    ref = np.array([[0.0], [1.0], [3.0]])  # k=1 radii: 1, 1, 2
    smp = np.array([[0.5], [0.6], [10.0]])
    m = manifold_metrics(ref, smp, 1, dtype=torch.float64)
    # 0.5 and 0.6 lie in the balls of 0 and 1 (2 each); 3's ball [1, 5] holds neither; 10 is outside all.
    assert m["density"] == pytest.approx((2 + 2 + 0) / (1 * 3))
    assert m["coverage"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 3)
