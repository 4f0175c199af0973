"""KID against torch-fidelity's kid_features_to_metric (same features, same subsets) and clean-fid's formula."""

import numpy as np
import pytest
import torch

from adapters.api.errors import InputError
from harness.metrics.kid import KID_SEED, KID_SUBSET_SIZE, KID_SUBSETS, kid, subset_indices


def features(seed, n, d, shift=0.0):
    """Non-negative, Inception-like features (post-ReLU averages)."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.standard_normal((n, d)) * 0.4 + 0.3 + shift).astype(np.float32)


def fidelity_kid(a, b, **kwargs):
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    out = kid_features_to_metric(torch.as_tensor(a), torch.as_tensor(b), verbose=False, **kwargs)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def test_defaults_are_torch_fidelitys():
    from torch_fidelity.defaults import DEFAULTS

    assert (KID_SUBSETS, KID_SUBSET_SIZE, KID_SEED) == (DEFAULTS["kid_subsets"], DEFAULTS["kid_subset_size"],
                                                      DEFAULTS["rng_seed"])
    assert (DEFAULTS["kid_kernel"], DEFAULTS["kid_kernel_poly_degree"], DEFAULTS["kid_kernel_poly_gamma"],
            DEFAULTS["kid_kernel_poly_coef0"]) == ("poly", 3, None, 1)  # cubic, gamma 1/d, coef 1


@pytest.mark.parametrize("n1,n2,d,subsets,size,shift", [(300, 250, 64, 10, 100, 0.0), (120, 200, 2048, 5, 120, 0.05),
                                                        (80, 80, 16, 7, 80, 0.3)])
def test_equals_torch_fidelity_on_the_same_features_and_subsets(n1, n2, d, subsets, size, shift):
    a, b = features(n1 + d, n1, d), features(n2 + d + 1, n2, d, shift)
    kw = dict(kid_subsets=subsets, kid_subset_size=size, rng_seed=KID_SEED)
    # float64 features: torch-fidelity's numpy code then runs in float64, as ours does with dtype float64.
    mean64, std64 = fidelity_kid(a.astype(np.float64), b.astype(np.float64), **kw)
    r = kid(a, b, subsets=subsets, subset_size=size, dtype=torch.float64)
    assert (r.mean, r.std) == (pytest.approx(mean64, rel=1e-10, abs=1e-15), pytest.approx(std64, rel=1e-9))
    assert (r.subsets, r.subset_size) == (subsets, size)
    # float32, as both run by default: the same up to float32 kernel rounding.
    mean32, std32 = fidelity_kid(a, b, **kw)
    r32 = kid(a, b, subsets=subsets, subset_size=size)
    assert r32.mean == pytest.approx(mean32, rel=1e-3, abs=1e-3 * std32)
    if shift:
        assert r.mean > 3 * r.std / np.sqrt(subsets) > 0  # different sets: a clearly positive KID


def test_subsets_are_drawn_as_torch_fidelity_draws_them():
    rng = np.random.RandomState(KID_SEED)  # torch-fidelity: one RandomState, set 1 then set 2 per subset
    expected = [(rng.choice(50, 10, replace=False), rng.choice(40, 10, replace=False)) for _ in range(3)]
    for (a, b), (ea, eb) in zip(subset_indices(50, 40, 3, 10), expected):
        np.testing.assert_array_equal(a, ea)
        np.testing.assert_array_equal(b, eb)


def test_subset_size_is_capped_at_the_smaller_set_as_clean_fid():
    """clean-fid's kernel_distance caps m at min(n1, n2, 1000); with m = n both sets are used whole
    and every subset is the same set, so clean-fid's (randomly drawn) subsets give the same value."""
    from cleanfid.fid import kernel_distance

    a, b = features(1, 40, 32), features(2, 30, 32, 0.1)
    r = kid(a.astype(np.float64), b.astype(np.float64), subsets=3, dtype=torch.float64)
    assert r.subset_size == 30
    rng_state = np.random.get_state()
    np.random.seed(0)
    try:
        # clean-fid draws its 30 of the 40 samples with the global RNG: compare on the whole sets.
        expected = kernel_distance(b.astype(np.float64), a[:30].astype(np.float64), num_subsets=1)
    finally:
        np.random.set_state(rng_state)
    whole = kid(a[:30].astype(np.float64), b.astype(np.float64), subsets=1, dtype=torch.float64)
    assert whole.mean == pytest.approx(expected, rel=1e-10)


def test_bootstrap_weights_of_one_reproduce_the_value():
    a, b = features(3, 60, 8), features(4, 50, 8, 0.2)
    ones = np.ones((60, 2))
    r = kid(a, b, subsets=4, subset_size=20, weights=ones, dtype=torch.float64)
    np.testing.assert_allclose(r.replicates, [r.mean, r.mean], rtol=1e-12)


def test_the_torch_path_of_other_devices_equals_the_numpy_path_of_the_cpu():
    """On a GPU the kernels and replicate sums run in torch, on the CPU in numpy: the same numbers
    (checked here with torch CPU tensors through the torch code)."""
    from harness.metrics.kid import _kernel, _replicates

    x, y = features(7, 30, 16), features(8, 30, 16, 0.1)
    w = np.random.default_rng(0).integers(0, 3, (30, 4)).astype(np.float64)
    k_np = (_kernel(x.copy()), _kernel(x.copy(), y))
    k_t = (_kernel(torch.from_numpy(x.copy())), _kernel(torch.from_numpy(x.copy()), torch.from_numpy(y)))
    for a, b in zip(k_np, k_t):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-6)
    np.testing.assert_allclose(_replicates(*k_t, torch.from_numpy(w), 30, 0.5), _replicates(*k_np, w, 30, 0.5),
                               rtol=1e-6)


def test_bad_input():
    a = features(5, 10, 4)
    with pytest.raises(InputError, match="one D"):
        kid(a, features(6, 10, 5))
    with pytest.raises(InputError, match="at least 2 vectors"):
        kid(a, a[:1])
    with pytest.raises(InputError, match="--kid-subset-size"):
        kid(a, a, subset_size=1)
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="sample features contain NaN"):
        kid(bad, a)
