"""Streaming Gaussian statistics, the Frechet distance, and the reference-statistics formats.

Statistics accumulate in float64 as (count, mean, co-moment) and merge with the parallel
update of Chan, Golub and LeVeque (1979), so 50,000 feature vectors never sit in memory
and partial sums from several processes combine exactly, up to float64 rounding.

The Frechet distance avoids `scipy.linalg.sqrtm`: tr((S1 S2)^1/2) is the sum of square
roots of the eigenvalues of S1 S2, which are the non-zero ones of the symmetric matrix F^T S1 F
for any factor S2 = F F^T. One symmetric eigenvalue problem replaces a general matrix square
root. S2 is the reference's covariance, factored once per process (`covariance_factor`):
Cholesky when it is positive definite, else V diag(sqrt(w)) over its r eigenvalues above
rounding, which makes F^T S1 F r x r (a 500-image reference at 2048 dimensions: 499 x 499) and
leaves out the square roots of rounding-sized eigenvalues that a (D, D) form adds (against the
exact form from a 500-image reference's features, 3e-12 off where a Cholesky factor of a
3,000-image sample covariance was 9e-6 off).

A distance is never negative; for identical or nearly identical statistics rounding can
put the computed value a little below 0 (-4.2e-07 for a folder against itself), and
`nonnegative` clamps such values to 0 and says so. A value further below 0 than rounding
explains means statistics that are not covariances, and is refused.

Statistics files (``load_stats`` reads all three). Statistics are kept per feature
(`harness.metrics.features.FEATURES`): Inception pool_3 under ``mu``/``sigma``, the sFID features
under ``mu_s``/``sigma_s`` (the names ADM and clean-fid use), any other feature f under
``mu_<f>``/``sigma_<f>`` (``mu_dinov2``, ``sigma_dinov2``).

- ADM reference batch (``VIRTUAL_imagenet256_labeled.npz``): ``mu``, ``sigma`` (pool_3),
  ``mu_s``, ``sigma_s`` (sFID), ``arr_0`` (the reference images, for precision/recall, KID
  and FD-DINOv2).
- clean-fid statistics: ``mu``, ``sigma``.
- nfebench (``save_stats``): the statistics above plus ``n``, ``mode``, ``network`` (Inception),
  ``network_<f>`` (other networks), ``format`` and optionally per-image features ``<f>_features``
  (``pool_features``: for precision/recall, density/coverage and KID). Format 1 files (pool_3
  and sFID only) read unchanged.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adapters.api.errors import InputError
from harness.results import atomic_write_npz

STATS_FORMAT = "nfebench-stats-2"  # 2: per-feature statistics (mu_<f>, network_<f>, <f>_features)
STATS_FORMATS = ("nfebench-stats-1", STATS_FORMAT)  # what `load_stats` reads; 1: pool_3 and sFID only
INCEPTION_FEATURES = ("pool", "spatial")  # described by the file's `network`
# A negative distance within this fraction of tr(sigma1) + tr(sigma2) is rounding: the
# square roots of eigenvalues that rounding leaves at ~1e-16 of the largest add up to that.
ROUNDING_RTOL = 1e-5


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


# Factors of the last few covariances factored, by their bytes: an eval's distance and its
# intervals, and every later eval in the process against the same reference, factor it once.
_FACTORS: OrderedDict[bytes, torch.Tensor] = OrderedDict()
FACTORS_KEPT = 4


def covariance_factor(sigma) -> torch.Tensor:
    """F with sigma = F F^T, float64 on the CPU: Cholesky (D, D) where sigma is positive definite,
    else V sqrt(w) over the eigenvalues above rounding, (D, r).

    The last `FACTORS_KEPT` are kept, keyed by sigma's bytes (hashing 2048 x 2048 float64 takes
    tens of milliseconds; its eigendecomposition, seconds on a CPU core). The caller must not
    modify the returned tensor.
    """
    s = np.ascontiguousarray(sigma, dtype=np.float64)
    key = hashlib.blake2b(s.data, digest_size=16).digest() + repr(s.shape).encode()
    if key in _FACTORS:
        _FACTORS.move_to_end(key)
        return _FACTORS[key]
    t = torch.from_numpy((s + s.T) / 2)  # stored covariances are symmetric up to rounding
    # torch's LAPACK (MKL in the x86 wheels) solves the symmetric eigenproblem several times
    # faster than numpy's OpenBLAS build.
    factor, info = torch.linalg.cholesky_ex(t)
    if int(info) != 0:
        w, v = torch.linalg.eigh(t)
        keep = w > w.max().clamp_min(0) * t.shape[0] * torch.finfo(t.dtype).eps
        factor = v[:, keep] * w[keep].sqrt()
    _FACTORS[key] = factor
    if len(_FACTORS) > FACTORS_KEPT:
        _FACTORS.popitem(last=False)
    return factor


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^1/2)``, with the trace
    of the square root taken from the eigenvalues of ``F^T sigma1 F`` (sigma2 = F F^T,
    `covariance_factor`): symmetric positive semi-definite, so its eigenvalues are real and
    tiny negative ones (rounding) are clipped to zero. Equals the `scipy.linalg.sqrtm` formula
    of the ADM evaluator to float64 rounding, several times faster at 2048 dimensions.

    Args:
        mu1, sigma1: mean (D,) and covariance (D, D) of one set (e.g. samples).
        mu2, sigma2: the same for the other set (e.g. the reference batch); its factor is kept
            for the next distance to the same statistics.

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
    s1 = torch.from_numpy((sigma1 + sigma1.T) / 2)  # stored covariances are symmetric up to rounding
    factor = covariance_factor(sigma2)  # (D, r), sigma2 = F F^T
    inner = factor.T @ s1 @ factor  # (r, r): the non-zero eigenvalues of s1 @ s2
    eig = torch.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(eig.clamp_min(0).sqrt().sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def nonnegative(value: float, sigma1, sigma2) -> tuple[float, str]:
    """A Frechet distance as reported: a value rounded below 0 becomes 0, with a note saying so.

    Values below ``-ROUNDING_RTOL * (tr sigma1 + tr sigma2)`` are not rounding: an InputError.

    Example::

        >>> nonnegative(-4.2e-07, np.eye(2), np.eye(2))
        (0.0, 'clamped from -4.2e-07 to 0 (float64 rounding: the statistics are nearly identical)')
    """
    if value >= 0:
        return value, ""
    scale = float(np.trace(np.asarray(sigma1))) + float(np.trace(np.asarray(sigma2)))
    if value < -ROUNDING_RTOL * scale:
        raise InputError(f"the Frechet distance came out {value:.6g}, below 0 by more than rounding explains "
                         f"(traces {scale:.6g}): the statistics are not valid covariances (not positive "
                         f"semi-definite); recompute them")
    return 0.0, f"clamped from {value:.2g} to 0 (float64 rounding: the statistics are nearly identical)"


def stat_names(feature: str) -> tuple[str, str]:
    """The array names of a feature's mean and covariance in a statistics file."""
    return {"pool": ("mu", "sigma"), "spatial": ("mu_s", "sigma_s")}.get(feature, (f"mu_{feature}", f"sigma_{feature}"))


def network_name(feature: str) -> str:
    """The array name of the network description behind a feature in a statistics file."""
    return "network" if feature in INCEPTION_FEATURES else f"network_{feature}"


@dataclass
class ReferenceStats:
    """Statistics read from a file: a Gaussian per feature (pool_3 always), per-image features
    where the file has them, and whether it holds the images (an ADM batch's arr_0)."""

    path: str
    kind: str  # "adm", "clean-fid" or "nfebench"
    gaussians: dict[str, tuple[np.ndarray, np.ndarray]]  # feature -> (mu (D,), sigma (D, D))
    n: int | None = None  # number of images behind the statistics, where the file says
    mode: str | None = None  # preprocessing mode, where the file says (nfebench files)
    networks: dict[str, str] = field(default_factory=dict)  # feature -> network recorded in the file
    features: dict[str, np.ndarray] = field(default_factory=dict)  # feature -> (n, D) per-image features
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


def _array(data, name: str, path: Path, kinds: str, what: str, ndim: int | None = None) -> np.ndarray:
    """Array `name` of a statistics file, held to its schema: a dtype of one of `kinds` (numpy's
    dtype kinds: "f" floats, "iu" integers, "U" text) and `ndim` dimensions where given."""
    try:
        a = data[name]
    except ValueError as exc:  # object arrays need pickle, which is never allowed here
        raise InputError(f"statistics file {path}: array {name!r} could not be read without pickle ({exc}); "
                         f"expected {what}. Rewrite the file with `nfebench ref-stats`") from None
    if a.dtype.kind not in kinds or (ndim is not None and a.ndim != ndim):
        raise InputError(f"statistics file {path}: array {name!r} is {a.dtype} of shape {a.shape}, expected {what}")
    return a


def load_stats(path: str | Path) -> ReferenceStats:
    """Read an ADM reference batch, a clean-fid statistics file or an nfebench one, every array
    held to its schema: floating-point means (D,) and covariances (D, D), per-image features
    (n, D), and for nfebench files a known ``format``, the count ``n``, the ``mode`` and the
    networks. A file that breaks it is one InputError naming the file, the array, what was
    found and what was expected.

    Example::

        ref = load_stats("VIRTUAL_imagenet256_labeled.npz")   # ref.kind == "adm"
        mu, sigma = ref.gaussians["pool"]
    """
    from harness.metrics.features import FEATURES
    from harness.metrics.preprocess import MODES

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
    kind = "nfebench" if "format" in names else "adm" if "mu_s" in names else "clean-fid"
    ref = ReferenceStats(str(path), kind, {}, has_images="arr_0" in names)
    for feature in FEATURES:
        mu_name, sigma_name = stat_names(feature)
        if {mu_name, sigma_name} <= names:
            mu = _array(data, mu_name, path, "f", "a floating-point mean of shape (D,)", ndim=1).astype(np.float64)
            sigma = _array(data, sigma_name, path, "f", "a floating-point covariance of shape (D, D)",
                           ndim=2).astype(np.float64)
            _check_gaussian(mu, sigma, f"{path} ({feature})" if feature != "pool" else str(path))
            ref.gaussians[feature] = (mu, sigma)
    if kind == "nfebench":
        fmt = str(_array(data, "format", path, "U", "the format name as text", ndim=0))
        if fmt not in STATS_FORMATS:
            raise InputError(f"statistics file {path}: format is {fmt!r}, expected one of {', '.join(STATS_FORMATS)} "
                             f"(a newer nfebench may have written it)")
        for key in ("n", "mode"):
            if key not in names:
                raise InputError(f"statistics file {path}: format {fmt} needs the array {key!r}, which it lacks")
        ref.n = int(_array(data, "n", path, "iu", "the image count as an integer", ndim=0))
        if ref.n < 1:
            raise InputError(f"statistics file {path}: n is {ref.n}, expected at least 1 image")
        ref.mode = str(_array(data, "mode", path, "U", "the preprocessing mode as text", ndim=0))
        if ref.mode not in MODES:
            raise InputError(f"statistics file {path}: mode is {ref.mode!r}, expected one of {', '.join(MODES)}")
        for feature in FEATURES:
            if network_name(feature) in names and (feature in ref.gaussians or f"{feature}_features" in names):
                ref.networks[feature] = str(_array(data, network_name(feature), path, "U",
                                                   "the network's description as text", ndim=0))
            if f"{feature}_features" in names:
                feats = _array(data, f"{feature}_features", path, "f", "per-image features (n, D) as floats", ndim=2)
                dim = ref.gaussians[feature][0].shape[0] if feature in ref.gaussians else feats.shape[1]
                if feats.shape[1] != dim or not np.isfinite(feats).all():
                    found = f"shape {feats.shape}" + ("" if np.isfinite(feats).all() else " with NaN or Inf")
                    raise InputError(f"statistics file {path}: {feature}_features has {found}, expected finite "
                                     f"features of width {dim}, the width of its mean")
                ref.features[feature] = feats
    return ref


def save_stats(path: str | Path, stats: dict[str, RunningStats], *, mode: str, networks: dict[str, str],
               features: dict[str, np.ndarray] | None = None) -> None:
    """Write nfebench statistics (readable by `load_stats`; clean-fid and the ADM evaluator read
    ``mu``/``sigma``/``mu_s``/``sigma_s`` from it).

    Args:
        stats: feature -> its statistics; must include "pool" (FID).
        mode: the Inception preprocessing mode.
        networks: feature -> the network (and weights) behind it.
        features: feature -> per-image features (N, D) to keep (e.g. pool_3 for precision/recall).

    Example::

        save_stats("ref.npz", {"pool": pool, "spatial": spatial}, mode="adm",
                   networks={"pool": inc.network, "spatial": inc.network})
    """
    if "pool" not in stats:
        raise InputError("a statistics file needs the pool_3 statistics (FID)")
    arrays = {"n": np.int64(stats["pool"].count), "mode": np.str_(mode), "format": np.str_(STATS_FORMAT)}
    for feature, st in stats.items():
        mu_name, sigma_name = stat_names(feature)
        arrays[mu_name], arrays[sigma_name] = st.mean, st.covariance
    for feature, array in (features or {}).items():
        arrays[f"{feature}_features"] = np.asarray(array, dtype=np.float32)
    for feature in set(stats) | set(features or {}):
        arrays[network_name(feature)] = np.str_(networks[feature])
    atomic_write_npz(path, **arrays)  # readers never see half a file
