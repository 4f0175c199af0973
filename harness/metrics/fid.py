"""Streaming Gaussian statistics, the Frechet distance, and the reference-statistics formats.

Statistics accumulate in float64 as (count, mean, co-moment) and merge with the parallel
update of Chan, Golub and LeVeque (1979), so 50,000 feature vectors never sit in memory
and partial sums from several processes combine exactly, up to float64 rounding.

The Frechet distance avoids `scipy.linalg.sqrtm`: tr((S1 S2)^1/2) is the sum of square
roots of the eigenvalues of S1 S2, which are those of the symmetric matrix L^T S2 L for
any factor S1 = L L^T (Cholesky when S1 is positive definite, V diag(sqrt(w)) otherwise).
One symmetric eigenvalue problem replaces a general matrix square root.

Statistics files (``load_stats`` reads all three):

- ADM reference batch (``VIRTUAL_imagenet256_labeled.npz``): ``mu``, ``sigma`` (pool_3),
  ``mu_s``, ``sigma_s`` (sFID), ``arr_0`` (the reference images, for precision/recall).
- clean-fid statistics: ``mu``, ``sigma``.
- nfebench (``save_stats``): ``mu``, ``sigma``, ``mu_s``, ``sigma_s`` plus ``n``, ``mode``,
  ``network``, ``format`` and optionally ``pool_features`` (for precision/recall).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import InputError
from harness.results import atomic_write_npz

STATS_FORMAT = "nfebench-stats-1"


class RunningStats:
    """Mean and covariance of feature vectors seen in batches, in float64.

    Example::

        s = RunningStats(2048)
        for feats in batches:            # each (B, 2048)
            s.update(feats)
        mu, sigma = s.mean, s.covariance  # sigma as np.cov(all_feats, rowvar=False)
    """

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.count = 0
        self.mean_ = np.zeros(dim, dtype=np.float64)
        self.comoment = np.zeros((dim, dim), dtype=np.float64)  # sum of (x - mean)(x - mean)^T

    def update(self, features) -> "RunningStats":
        """Add a batch of feature vectors (B, dim) (numpy or torch)."""
        x = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(f"features have shape {x.shape}, expected (B, {self.dim})")
        if not np.isfinite(x).all():
            raise InputError("features contain NaN or Inf; check the images fed to the network")
        if len(x) == 0:
            return self
        batch = RunningStats(self.dim)
        batch.count = len(x)
        batch.mean_ = x.mean(axis=0)
        centred = x - batch.mean_  # (B, D)
        batch.comoment = centred.T @ centred  # (D, D)
        return self.merge(batch)

    def merge(self, other: "RunningStats") -> "RunningStats":
        """Fold `other` into this one (Chan et al.): the result is as if every vector of both
        had been added here."""
        if other.dim != self.dim:
            raise InputError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        if other.count == 0:
            return self
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        delta = other.mean_ - self.mean_  # (D,)
        self.mean_ = self.mean_ + delta * (n_b / n)
        self.comoment = self.comoment + other.comoment + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n
        return self

    @property
    def mean(self) -> np.ndarray:
        return self.mean_.copy()

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased covariance (divides by count - 1), as ``np.cov`` and the ADM evaluator."""
        if self.count < 2:
            raise InputError(f"a covariance needs at least 2 samples, got {self.count}")
        return self.comoment / (self.count - 1)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that `from_state` turns back into these statistics (to merge across processes)."""
        return {"count": np.int64(self.count), "mean": self.mean_, "comoment": self.comoment}

    @classmethod
    def from_state(cls, state) -> "RunningStats":
        s = cls(len(state["mean"]))
        s.count = int(state["count"])
        s.mean_ = np.asarray(state["mean"], dtype=np.float64).copy()
        s.comoment = np.asarray(state["comoment"], dtype=np.float64).copy()
        return s


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, what: str) -> None:
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise InputError(f"{what}: mean of shape {mu.shape} and covariance of shape {sigma.shape} do not fit")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InputError(f"{what}: statistics contain NaN or Inf")


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^1/2)``, with the trace
    of the square root taken from the eigenvalues of ``L^T sigma2 L`` (sigma1 = L L^T, or the
    same with the roles swapped):
    symmetric positive semi-definite, so its eigenvalues are real and tiny negative ones
    (rounding) are clipped to zero. Equals the `scipy.linalg.sqrtm` formula of the ADM
    evaluator to float64 rounding, several times faster at 2048 dimensions.

    Args:
        mu1, sigma1: mean (D,) and covariance (D, D) of one set (e.g. samples).
        mu2, sigma2: the same for the other set (e.g. the reference batch).

    Example::

        >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))
        2.0
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    _check_gaussian(mu1, sigma1, "first statistics")
    _check_gaussian(mu2, sigma2, "second statistics")
    if mu1.shape != mu2.shape:
        raise InputError(f"statistics have different dimensions: {mu1.shape[0]} and {mu2.shape[0]}; "
                         f"were they computed with the same feature layer?")
    # torch's LAPACK (MKL in the x86 wheels) solves the symmetric eigenproblem several times
    # faster than numpy's OpenBLAS build; everything stays float64 on the CPU.
    s1 = torch.from_numpy((sigma1 + sigma1.T) / 2)  # stored covariances are symmetric up to rounding
    s2 = torch.from_numpy((sigma2 + sigma2.T) / 2)
    # s1 s2 and s2 s1 have the same eigenvalues: factor whichever is positive definite (a
    # 10,000-image reference usually is; a small sample set is not) by Cholesky.
    for a, b in ((s1, s2), (s2, s1)):
        factor, info = torch.linalg.cholesky_ex(a)  # (D, D), a = L L^T where info == 0
        if int(info) == 0:
            other = b
            break
    else:
        # Both singular (fewer samples than dimensions): factor s1 by its eigendecomposition.
        w, v = torch.linalg.eigh(s1)
        factor, other = v * w.clamp_min(0).sqrt(), s2  # (D, D), s1 = F F^T
    inner = factor.T @ other @ factor  # (D, D), same eigenvalues as s1 @ s2
    eig = torch.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(eig.clamp_min(0).sqrt().sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


@dataclass
class ReferenceStats:
    """Statistics read from a file: pool_3 (always), spatial (for sFID) and pool_3 features or
    images (for precision/recall) where the file has them."""

    path: str
    kind: str  # "adm", "clean-fid" or "nfebench"
    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    n: int | None = None  # number of images behind the statistics, where the file says
    mode: str | None = None  # preprocessing mode, where the file says (nfebench files)
    network: str | None = None
    pool_features: np.ndarray | None = None
    has_images: bool = False  # an ADM batch: arr_0 holds the reference images


def is_stats_file(path: str | Path) -> bool:
    """True for an .npz holding ``mu`` and ``sigma`` (read without loading the arrays)."""
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
    return {"mu.npy", "sigma.npy"} <= names


def load_stats(path: str | Path) -> ReferenceStats:
    """Read an ADM reference batch, a clean-fid statistics file or an nfebench one.

    Example::

        ref = load_stats("VIRTUAL_imagenet256_labeled.npz")   # ref.kind == "adm"
        fid = frechet_distance(mu, sigma, ref.mu, ref.sigma)
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"statistics file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        names = set(data.files)
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
    if not {"mu", "sigma"} <= names:
        raise InputError(f"{path}: a statistics file needs arrays 'mu' and 'sigma'; it holds {sorted(names)}")
    mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    _check_gaussian(mu, sigma, str(path))
    if "format" in names:
        kind = "nfebench"
    elif "mu_s" in names:
        kind = "adm"
    else:
        kind = "clean-fid"
    ref = ReferenceStats(str(path), kind, mu, sigma, has_images="arr_0" in names)
    if {"mu_s", "sigma_s"} <= names:
        ref.mu_s, ref.sigma_s = data["mu_s"].astype(np.float64), data["sigma_s"].astype(np.float64)
        _check_gaussian(ref.mu_s, ref.sigma_s, f"{path} (spatial)")
    if kind == "nfebench":
        ref.n = int(data["n"])
        ref.mode = str(data["mode"])
        ref.network = str(data["network"])
        if "pool_features" in names:
            ref.pool_features = data["pool_features"]
    return ref


def save_stats(path: str | Path, pool: RunningStats, spatial: RunningStats | None, *, mode: str, network: str,
               pool_features: np.ndarray | None = None) -> None:
    """Write nfebench statistics (readable by `load_stats`, clean-fid and the ADM evaluator,
    which look only at ``mu``/``sigma``/``mu_s``/``sigma_s``)."""
    arrays = {"mu": pool.mean, "sigma": pool.covariance, "n": np.int64(pool.count), "mode": np.str_(mode),
              "network": np.str_(network), "format": np.str_(STATS_FORMAT)}
    if spatial is not None:
        arrays["mu_s"], arrays["sigma_s"] = spatial.mean, spatial.covariance
    if pool_features is not None:
        arrays["pool_features"] = np.asarray(pool_features, dtype=np.float32)
    atomic_write_npz(path, **arrays)  # readers never see half a file
