"""Streaming statistics, Frechet distance and statistics files against independent references."""

import numpy as np
import pytest
import scipy.linalg

from adapters.api.errors import InputError
from harness.metrics.fid import (
    RunningStats,
    covariance_factor,
    frechet_distance,
    is_stats_file,
    load_stats,
    nonnegative,
    save_stats,
)


def sqrtm_frechet(mu1, s1, mu2, s2):
    """The ADM evaluator's formula (scipy sqrtm), float64: the reference."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def random_spd(rng, d, n):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)
    return np.cov(x, rowvar=False)


def test_running_stats_equal_numpy_in_any_batching():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((301, 17)) * 3 + 100  # offset: a naive sum-of-squares loses digits
    s = RunningStats(17)
    for lo in range(0, len(x), 37):
        s.update(x[lo:lo + 37])
    assert s.count == 301
    np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(s.covariance, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)


def test_merge_of_shards_equals_one_pass():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 9))
    whole = RunningStats(9).update(x)
    shards = [RunningStats(9).update(part) for part in np.array_split(x, 7)]
    merged = RunningStats(9)
    for shard in shards:  # e.g. one per process, combined through state() / from_state()
        merged.merge(RunningStats.from_state(shard.state()))
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(merged.covariance, whole.covariance, rtol=1e-12, atol=1e-15)


def test_running_stats_refuse_bad_features():
    s = RunningStats(4)
    with pytest.raises(InputError, match="shape"):
        s.update(np.zeros((3, 5)))
    with pytest.raises(InputError, match="NaN or Inf"):
        s.update(np.array([[0, 1, np.nan, 2.0]]))
    s.update(np.zeros((1, 4)))
    with pytest.raises(InputError, match="at least 2 samples"):
        s.covariance


# n < d: a singular covariance. Cases: both definite (Cholesky of sigma2), sigma1 singular
# (Cholesky of sigma2), both singular (eigendecomposition of sigma2).
@pytest.mark.parametrize("d,n1,n2", [(8, 100, 100), (64, 40, 500), (64, 40, 40), (256, 1000, 1000)])
def test_frechet_equals_sqrtm_reference(d, n1, n2):
    rng = np.random.default_rng(d + n1 + n2)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(rng, d, n1), random_spd(rng, d, n2) * 2
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = sqrtm_frechet(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6)
    # symmetric to rounding (the second argument's covariance is the one factored)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-8)


def test_a_singular_reference_is_factored_once_at_its_rank():
    """A reference of m < d images: F is (d, m - 1) with F F^T = sigma, kept for the next distance,
    and the distance equals the one from the reference's centred features Z (sigma = Z^T Z / (m - 1)),
    whose non-zero eigenvalues of sigma1 sigma are those of Z sigma1 Z^T / (m - 1)."""
    rng = np.random.default_rng(11)
    d, m = 96, 30
    ref = rng.standard_normal((m, d)) * rng.uniform(0.5, 2, d)
    mu_r, sigma_r = ref.mean(0), np.cov(ref, rowvar=False)
    factor = covariance_factor(sigma_r)
    assert factor.shape == (d, m - 1)
    np.testing.assert_allclose(factor.numpy() @ factor.numpy().T, sigma_r, atol=1e-12)
    assert covariance_factor(sigma_r.copy()) is factor  # the same bytes: not factored again
    z = ref - mu_r
    for n in (12, 400):  # a singular and a positive definite sample covariance
        x = rng.standard_normal((n, d)) + 0.3
        mu, sigma = x.mean(0), np.cov(x, rowvar=False)
        eig = np.linalg.eigvalsh(z @ sigma @ z.T / (m - 1))
        closed = (mu - mu_r) @ (mu - mu_r) + np.trace(sigma) + np.trace(sigma_r) - 2 * np.sqrt(eig.clip(0)).sum()
        # rel 1e-8: at n = 12 both forms take square roots of rounding-sized eigenvalues (rank 11 of 29)
        assert frechet_distance(mu, sigma, mu_r, sigma_r) == pytest.approx(closed, rel=1e-8), n


def test_frechet_closed_forms():
    rng = np.random.default_rng(3)
    mu, s = rng.standard_normal(32), random_spd(rng, 32, 200)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)  # identical statistics
    # Commuting covariances a I and b I: d (sqrt(a) - sqrt(b))^2, plus the squared mean shift.
    d = 16
    assert frechet_distance(np.zeros(d), 4 * np.eye(d), np.ones(d), 9 * np.eye(d)) == pytest.approx(d * 1 + d)


def test_frechet_bad_input():
    with pytest.raises(InputError, match="different dimensions: 3 and 4"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(InputError, match="NaN or Inf"):
        frechet_distance(np.zeros(3), np.full((3, 3), np.inf), np.zeros(3), np.eye(3))
    with pytest.raises(InputError, match="do not fit"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))


def test_stats_files_round_trip_and_formats(tmp_path):
    rng = np.random.default_rng(5)
    pool = RunningStats(6).update(rng.standard_normal((20, 6)))
    spatial = RunningStats(3).update(rng.standard_normal((20, 3)))
    dino = RunningStats(4).update(rng.standard_normal((20, 4)))
    ours = tmp_path / "ours.npz"
    save_stats(ours, {"pool": pool, "spatial": spatial, "dinov2": dino}, mode="clean",
               networks={"pool": "net", "spatial": "net", "dinov2": "dino-net"}, features={"pool": np.ones((20, 6))})
    ref = load_stats(ours)
    assert (ref.kind, ref.n, ref.mode) == ("nfebench", 20, "clean")
    assert ref.networks == {"pool": "net", "spatial": "net", "dinov2": "dino-net"}
    np.testing.assert_array_equal(ref.gaussians["pool"][1], pool.covariance)
    np.testing.assert_array_equal(ref.gaussians["spatial"][0], spatial.mean)
    np.testing.assert_array_equal(ref.gaussians["dinov2"][1], dino.covariance)
    assert ref.features["pool"].shape == (20, 6) and set(ref.features) == {"pool"}
    # The names ADM and clean-fid read are where they look for them.
    with np.load(ours) as raw:
        assert {"mu", "sigma", "mu_s", "sigma_s", "mu_dinov2", "sigma_dinov2", "pool_features"} <= set(raw.files)
        assert str(raw["format"]) == "nfebench-stats-2"

    old = tmp_path / "format1.npz"  # an nfebench file written before per-feature statistics
    np.savez(old, mu=pool.mean, sigma=pool.covariance, mu_s=spatial.mean, sigma_s=spatial.covariance, n=np.int64(20),
             mode=np.str_("adm"), network=np.str_("net"), format=np.str_("nfebench-stats-1"),
             pool_features=np.ones((20, 6), np.float32))
    ref = load_stats(old)
    assert set(ref.gaussians) == {"pool", "spatial"} and ref.features["pool"].shape == (20, 6)
    assert ref.networks == {"pool": "net", "spatial": "net"}

    adm = tmp_path / "adm.npz"  # ADM reference batch layout
    np.savez(adm, mu=pool.mean, sigma=pool.covariance, mu_s=spatial.mean, sigma_s=spatial.covariance,
             arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    ref = load_stats(adm)
    assert ref.kind == "adm" and ref.has_images and "spatial" in ref.gaussians and ref.mode is None

    clean = tmp_path / "clean.npz"  # clean-fid statistics
    np.savez(clean, mu=pool.mean, sigma=pool.covariance)
    ref = load_stats(clean)
    assert ref.kind == "clean-fid" and set(ref.gaussians) == {"pool"} and not ref.has_images
    assert is_stats_file(clean) and not is_stats_file(tmp_path / "missing.npz")


def test_negative_distances_within_rounding_are_clamped_and_said():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 40))  # fewer samples than dimensions: singular, as a small folder's
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    raw = frechet_distance(mu, sigma, mu, sigma)  # the same statistics twice
    assert -1e-5 < raw < 0  # rounding puts it below zero, as the -4.2e-07 of a folder against itself
    assert nonnegative(raw, sigma, sigma) == (0.0, f"clamped from {raw:.2g} to 0 (float64 rounding: the statistics "
                                                   f"are nearly identical)")
    assert nonnegative(-4.2e-07, np.eye(2) * 50, np.eye(2) * 50) == (
        0.0, "clamped from -4.2e-07 to 0 (float64 rounding: the statistics are nearly identical)")
    assert nonnegative(3.5, sigma, sigma) == (3.5, "")
    with pytest.raises(InputError, match="below 0 by more than rounding explains"):
        nonnegative(-1.0, np.eye(2), np.eye(2))


def test_stats_files_bad_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_stats(tmp_path / "none.npz")
    images = tmp_path / "images.npz"
    np.savez(images, arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(InputError, match=r"images.npz: a statistics file needs arrays 'mu' and 'sigma'"):
        load_stats(images)
    bad = tmp_path / "nan.npz"
    np.savez(bad, mu=np.full(3, np.nan), sigma=np.eye(3))
    with pytest.raises(InputError, match="nan.npz: statistics contain NaN"):
        load_stats(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.npz: not a readable"):
        load_stats(junk)
