"""Sample -> decode -> uint8 -> features -> metrics, and the same from image files.

Metrics and the features they read (`harness.metrics.features`):

- ``fid``, ``sfid``, ``fd_dinov2``: Frechet distances of the Gaussians of Inception pool_3,
  Inception mixed_6/conv and DINOv2 ViT-L/14 features (`FRECHET`);
- ``is``: Inception Score, from pool_3 times the softmax weights;
- ``pr`` (precision, recall), ``dc`` (density, coverage), ``kid``: on the per-image pool_3
  features of both sets (`PAIRWISE`);
- 95% bootstrap intervals (`harness.metrics.bootstrap`) for ``fid``, ``fd_dinov2`` and ``kid``,
  over the per-image features of the samples.

Image files stream through in batches: features update float64 running statistics, the
Inception Score accumulator and, only where a metric needs them, lists of per-image features.

Sampling (`evaluate_sampler`) works in shards of fixed sample indices, dealt to the processes
of a torchrun or JAX multi-process run (`harness.distributed`) and kept on disk by rank 0
(`harness.workdir`): each shard's features are stored raw, and rank 0 merges the shards in
shard order, so the statistics are the same for any number of processes and batch size, and
a killed run resumes where it stopped.

Inputs the file path accepts (`open_source`): a folder of images, an ``.npz`` of uint8
NHWC images in ``arr_0`` (an ADM sample batch, read in a stream), or a statistics ``.npz``
(ADM reference batch, clean-fid or nfebench statistics; see `harness.metrics.fid`).

Example::

    from adapters import load_sampler
    from harness.evaluate import evaluate_sampler, open_source
    s = load_sampler("sit-b2", checkpoint="sit-b2.pt")
    values, skipped, ctx = evaluate_sampler(s, open_source("VIRTUAL_imagenet256_labeled.npz"),
                                            num_samples=50_000, batch_size=64, seed=0)
    values[0].value, values[0].ci_low, values[0].ci_high
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from harness import results
from harness.distributed import World, rounds, run_and_exchange, run_checked, run_on_root
from adapters.api.errors import InputError
from harness.metrics.bootstrap import (BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED, frechet_replicates, half_sample_weights,
                                       interval)
from harness.metrics.features import FEATURES, FeatureExtractor, Unavailable, extract_all, extractor_class, extractor_of
from harness.metrics.fid import (ReferenceStats, RunningStats, frechet_distance, is_stats_file, load_stats,
                                 nonnegative, save_stats, stat_names)
from harness.metrics.inception_score import InceptionScore
from harness.metrics.kid import KID_SEED, KID_SUBSET_SIZE, KID_SUBSETS, kid
from harness.metrics.prdc import ADM_K, manifold_metrics
from harness.metrics.preprocess import ADM, QUANTIZATION, as_nchw_uint8, check_mode, quantize
from adapters.api.sampler import NonFiniteSampleError, check_finite
from adapters.api.seeding import sample_labels, sample_noise
from harness.workdir import DEFAULT_SHARD_SIZE, WorkDir, shard_ranges

METRIC_CHOICES = ("fid", "is", "sfid", "pr", "dc", "kid", "fd_dinov2")  # --metrics names
DEFAULT_METRICS = ("fid",)
# Frechet distances: --metrics name -> (row metric, feature whose Gaussians it compares, label)
FRECHET = {"fid": (results.FID, "pool", "FID"), "sfid": (results.SFID, "spatial", "sFID"),
           "fd_dinov2": (results.FD_DINOV2, "dinov2", "FD-DINOv2")}
# Metrics on the per-image features of both sets: --metrics name -> (feature, label)
PAIRWISE = {"pr": ("pool", "precision/recall"), "dc": ("pool", "density/coverage"), "kid": ("pool", "KID")}
INTERVALS = ("fid", "fd_dinov2", "kid")  # metrics that get bootstrap intervals
MIN_SAMPLES, RELIABLE_SAMPLES = 2, 2048


class MetricWarning(UserWarning):
    """A number that will be computed but deserves a caveat (few samples, mixed modes, inputs
    read with a conversion)."""


IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}  # as clean-fid


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``"fid,is"`` -> ("fid", "is"); unknown names are an InputError."""
    names = tuple(m.strip() for m in (text or ",".join(DEFAULT_METRICS)).split(",") if m.strip())
    unknown = [m for m in names if m not in METRIC_CHOICES]
    if unknown or not names:
        raise InputError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METRIC_CHOICES)}")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class MetricOptions:
    """Settings of the metrics besides their names, with their defaults in one place.

    Example::

        MetricOptions(mode="clean", kid_subsets=50, bootstrap=0)   # no intervals
    """

    mode: str = ADM  # Inception preprocessing: adm or clean
    kid_subsets: int = KID_SUBSETS
    kid_subset_size: int = KID_SUBSET_SIZE  # capped at the smaller set
    bootstrap: int = BOOTSTRAP_REPLICATES  # replicates per interval; 0: no intervals
    inception_weights: str | None = None  # torch-fidelity's Inception file, for IS (default: looked up)
    dinov2_weights: str | None = None  # dinov2_vitl14_pretrain.pth (default: looked up)

    def check(self) -> "MetricOptions":
        check_mode(self.mode)
        if self.kid_subsets < 1 or self.kid_subset_size < 2:
            raise InputError(f"--kid-subsets must be at least 1 and --kid-subset-size at least 2, got "
                             f"{self.kid_subsets} and {self.kid_subset_size}")
        if self.bootstrap < 0 or self.bootstrap == 1:
            raise InputError(f"--bootstrap must be 0 (no intervals) or at least 2 replicates, got {self.bootstrap}")
        return self

    def settings(self) -> dict:
        """What changes the numbers (for the work-dir manifest); weight files enter through the networks."""
        return {"kid_subsets": self.kid_subsets, "kid_subset_size": self.kid_subset_size, "kid_seed": KID_SEED,
                "bootstrap": self.bootstrap, "bootstrap_seed": BOOTSTRAP_SEED}


# ----------------------------------------------------------------------------- image sources


class ImageFolder:
    """Images in a folder (recursively, sorted by path), as uint8 NHWC batches; all one size.

    Read as clean-fid and torch-fidelity read them (PIL, converted to RGB), except:
    16-bit greyscale images (which PIL's RGB conversion clips at 255) are read at full depth
    and scaled to 8 bits by their high byte, the rule PIL itself applies to 16-bit colour PNGs;
    32-bit integer and float images are refused. Images with an alpha channel lose it (the RGB
    values are used as stored); both are said once per folder (`MetricWarning`).
    """

    SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
    ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")

    def __init__(self, path: Path):
        self.path = path
        self.files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.files:
            raise InputError(f"{path}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.count = len(self.files)

    def _read(self, file: Path, seen: dict[str, list[Path]]) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(file) as img:
                img.load()
                if img.mode in self.SIXTEEN_BIT:
                    seen["16-bit"].append(file)
                    grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)  # (H, W)
                    return np.repeat(grey[:, :, None], 3, axis=2)  # (H, W, 3)
                if img.mode in ("I", "F"):
                    raise InputError(f"{file} is a {'32-bit integer' if img.mode == 'I' else 'floating-point'} "
                                     f"image (PIL mode {img.mode}), which has no standard 8-bit reading; save it "
                                     f"as an 8-bit (or 16-bit) PNG")
                if img.mode in self.ALPHA or (img.mode == "P" and "transparency" in img.info):
                    seen["alpha"].append(file)
                return np.asarray(img.convert("RGB"))  # (H, W, 3) uint8, as clean-fid and torch-fidelity read
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read image {file}: {exc}") from exc

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        shape = None
        seen: dict[str, list[Path]] = {"16-bit": [], "alpha": []}
        for start in range(0, self.count, batch_size):
            files = self.files[start:start + batch_size]
            imgs = [self._read(f, seen) for f in files]
            for f, img in zip(files, imgs):
                shape = shape or img.shape
                if img.shape != shape:
                    raise InputError(f"{f} is {img.shape[1]}x{img.shape[0]}, the folder's first image is "
                                     f"{shape[1]}x{shape[0]}; all images of a folder must have one size")
            yield np.stack(imgs)  # (B, H, W, 3)
        if seen["16-bit"]:
            warnings.warn(f"{self.path}: {len(seen['16-bit'])} 16-bit greyscale image(s) (first: "
                          f"{seen['16-bit'][0].name}) read at full depth and scaled to 8 bits by their high byte "
                          f"(v >> 8, as PIL reads 16-bit colour PNGs)", MetricWarning, stacklevel=2)
        if seen["alpha"]:
            warnings.warn(f"{self.path}: {len(seen['alpha'])} image(s) with an alpha channel (first: "
                          f"{seen['alpha'][0].name}); the alpha channel is dropped and the RGB values are used as "
                          f"stored, not composited, as clean-fid and torch-fidelity read them", MetricWarning,
                          stacklevel=2)


class NpzImages:
    """``arr_0`` of an .npz (uint8 NHWC, ADM's sample-batch layout), read batch by batch from
    the zip member so 50,000 images never sit in memory."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with zipfile.ZipFile(path) as z, z.open("arr_0.npy") as f:
                self.shape, self.dtype = _read_npy_header(f, path)
        except KeyError as exc:
            raise InputError(f"{path}: an image .npz needs the array arr_0 (uint8 NHWC)") from exc
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
        # Check dtype, rank and channels on an empty array of the stored layout.
        as_nchw_uint8(np.zeros((0, *self.shape[1:]), self.dtype), what=f"{path} arr_0")
        self.count = int(self.shape[0])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        per_image = int(np.prod(self.shape[1:]))
        with zipfile.ZipFile(self.path) as z, z.open("arr_0.npy") as f:
            _read_npy_header(f, self.path)
            for start in range(0, self.count, batch_size):
                n = min(batch_size, self.count - start)
                buf = f.read(n * per_image)
                if len(buf) != n * per_image:
                    raise InputError(f"{self.path}: arr_0 is truncated at image {start}")
                yield np.frombuffer(bytearray(buf), np.uint8).reshape(n, *self.shape[1:])  # (B, H, W, 3), writable


def _read_npy_header(f, path: Path) -> tuple[tuple, np.dtype]:
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise InputError(f"{path}: unsupported .npy version {version} for arr_0")
    shape, fortran, dtype = read(f)
    if fortran:
        raise InputError(f"{path}: arr_0 is stored in Fortran order; save it C-contiguous")
    return shape, dtype


def open_source(path: str | Path) -> ImageFolder | NpzImages | ReferenceStats:
    """A folder of images, an image .npz (``arr_0``) or a statistics .npz, by what the path holds."""
    path = Path(path)
    if path.is_dir():
        return ImageFolder(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.suffix != ".npz":
        raise InputError(f"{path}: expected a folder of images or an .npz file")
    if is_stats_file(path):
        return load_stats(path)
    return NpzImages(path)


# ----------------------------------------------------------------------------- features


def metric_features(metric: str) -> frozenset[str]:
    """The features a metric reads."""
    if metric in FRECHET:
        return frozenset({FRECHET[metric][1]})
    if metric in PAIRWISE:
        return frozenset({PAIRWISE[metric][0]})
    return frozenset({"logits"})  # is


@dataclass(frozen=True)
class Plan:
    """What the metrics to compute need from each set of images.

    Example::

        plan = make_plan(("fid", "kid"), MetricOptions())
        plan.stats, plan.keep, plan.reference_keep     # {"pool"}, {"pool"}, {"pool"}
    """

    metrics: tuple[str, ...]
    stats: frozenset[str]  # features whose Gaussians both sides need
    keep: frozenset[str]  # per-image features of the samples (pairwise metrics, intervals)
    reference_keep: frozenset[str]  # per-image features of the reference (pairwise metrics)
    logits: bool  # IS

    @property
    def extract(self) -> frozenset[str]:
        """What the samples' networks compute."""
        return self.stats | self.keep | (frozenset({"logits"}) if self.logits else frozenset())

    @property
    def stored(self) -> frozenset[str]:
        """The per-image arrays of a work-dir shard: IS logits are recomputed from pool_3 at the merge."""
        return self.stats | self.keep | (frozenset({"pool"}) if self.logits else frozenset())


def make_plan(metrics: tuple[str, ...], options: MetricOptions) -> Plan:
    reference_keep = frozenset(PAIRWISE[m][0] for m in metrics if m in PAIRWISE)
    stats = frozenset(FRECHET[m][1] for m in metrics if m in FRECHET)
    intervals = frozenset(FRECHET[m][1] for m in metrics if m in FRECHET and m in INTERVALS)
    keep = reference_keep | (intervals if options.bootstrap else frozenset())
    return Plan(tuple(metrics), stats, keep, reference_keep, "is" in metrics)


def open_extractors(metrics: tuple[str, ...], options: MetricOptions,
                    device: str) -> tuple[dict[str, FeatureExtractor], Plan, list[str]]:
    """The networks the metrics need, the plan of the metrics that can be computed, and a message
    for each metric that cannot (its weights are missing): (extractors, plan, skipped).

    Example::

        extractors, plan, skipped = open_extractors(("fid", "fd_dinov2"), MetricOptions(), "cpu")
    """
    extractors: dict[str, FeatureExtractor] = {}
    unavailable: dict[str, str] = {}
    wanted = frozenset(f for m in metrics for f in metric_features(m))
    for name in dict.fromkeys(extractor_of(f) for f in sorted(wanted)):
        try:
            extractors[name] = extractor_class(name).from_options(
                device, options, frozenset(f for f in wanted if extractor_of(f) == name))
        except Unavailable as exc:
            unavailable[name] = str(exc)
    skipped, computable = [], []
    for m in metrics:
        for f in sorted(metric_features(m)):
            name = extractor_of(f)
            if name in unavailable:
                message = unavailable[name]
            elif f not in extractors[name].available:
                message = extractors[name].unavailable_message(f)
            else:
                continue
            if message not in skipped:
                skipped.append(message)
            break
        else:
            computable.append(m)
    if not computable:
        raise InputError(f"none of the metrics asked for ({', '.join(metrics)}) can be computed here: "
                         f"{'; '.join(skipped)}")
    for ext in extractors.values():
        if ext.weights_warning:
            warnings.warn(ext.weights_warning, MetricWarning, stacklevel=2)
    return extractors, make_plan(tuple(computable), options), skipped


@dataclass
class Collected:
    """What the metrics need from one set of images."""

    count: int
    stats: dict[str, RunningStats]  # feature -> float64 running statistics
    kept: dict[str, list[np.ndarray]]  # feature -> per-image features, in batches
    inception_score: InceptionScore | None = None

    @classmethod
    def empty(cls, stats: frozenset[str], keep: frozenset[str], logits: bool = False) -> "Collected":
        return cls(0, {f: RunningStats(FEATURES[f][1]) for f in sorted(stats)}, {f: [] for f in sorted(keep)},
                   InceptionScore() if logits else None)

    def features(self, feature: str) -> np.ndarray:
        return np.concatenate(self.kept[feature])  # (N, D)


class FeatureCollector:
    """Feeds uint8 batches through the networks and accumulates statistics, per-image features
    and IS logits.

    Example::

        col = FeatureCollector(extractors, stats={"pool", "spatial"}, keep={"pool"})
        for batch in source.batches(64):
            col.add(batch)
        col.result.stats["pool"].mean
    """

    def __init__(self, extractors: dict[str, FeatureExtractor], stats: frozenset[str], keep: frozenset[str],
                 logits: bool = False):
        self.extractors = extractors
        self.result = Collected.empty(frozenset(stats), frozenset(keep), logits)
        self.wanted = frozenset(stats) | frozenset(keep) | (frozenset({"logits"}) if logits else frozenset())

    def add(self, images) -> None:
        r = self.result
        images = as_nchw_uint8(images)
        f = extract_all(self.extractors, images, self.wanted)
        r.count += len(images)
        for name, st in r.stats.items():
            st.update(f[name])
        for name, kept in r.kept.items():
            kept.append(f[name].float().cpu().numpy())
        if r.inception_score is not None:
            r.inception_score.update(f["logits"])


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer, got {batch_size}")


def collect(source: ImageFolder | NpzImages, extractors: dict[str, FeatureExtractor], stats: frozenset[str],
            keep: frozenset[str], batch_size: int, *, logits: bool = False, desc: str = "features") -> Collected:
    """Features of every image of `source`, with a tqdm progress bar."""
    from tqdm.auto import tqdm

    check_batch_size(batch_size)
    col = FeatureCollector(extractors, stats, keep, logits)
    with tqdm(total=source.count, desc=desc, unit="img", leave=False) as bar:
        for batch in source.batches(batch_size):
            col.add(batch)
            bar.update(len(batch))
    return col.result


# ----------------------------------------------------------------------------- metrics


@dataclass
class MetricValue:
    """One number for a results row."""

    metric: str  # a results.* constant
    value: float
    n: int  # samples behind the number
    spread: float | None = None
    notes: str = ""
    ci_low: float | None = None  # 95% bootstrap interval, in the unit of value
    ci_high: float | None = None
    network: str = ""  # the network and weights behind the number, in full
    extractor: str = ""  # the feature extractor's name (`harness.metrics.features.EXTRACTORS`)


@dataclass
class Reference:
    """The other side of a comparison: a Gaussian per feature and per-image features."""

    name: str
    gaussians: dict[str, tuple[np.ndarray, np.ndarray]]
    n: int | None
    features: dict[str, np.ndarray]


def _networks_differ(source: ReferenceStats, extractors: dict[str, FeatureExtractor], used: frozenset[str]) -> None:
    for f in sorted(used):
        recorded, ext = source.networks.get(f), extractors.get(extractor_of(f))
        if recorded and ext is not None and recorded != ext.network:
            warnings.warn(f"{source.path}: its {f} features were computed with {recorded}, the samples' with "
                          f"{ext.network}; numbers between different networks do not compare", MetricWarning,
                          stacklevel=3)


def prepare_reference(source, extractors: dict[str, FeatureExtractor], plan: Plan, mode: str,
                      batch_size: int) -> Reference:
    """Statistics from a file, or computed from images. What a statistics file lacks and its
    images (an ADM batch's arr_0) can give is computed from them: pool_3 features for
    precision/recall or KID, DINOv2 statistics for FD-DINOv2."""
    name = str(getattr(source, "path", source))
    check_reference(source, plan, mode)
    if isinstance(source, ReferenceStats):
        gaussians = {f: source.gaussians[f] for f in plan.stats if f in source.gaussians}
        features = {f: source.features[f] for f in plan.reference_keep if f in source.features}
        from_file = frozenset(gaussians) | frozenset(features)
        if source.kind == "adm" and mode != ADM and any(extractor_of(f) == "inception" for f in from_file):
            warnings.warn(f"{source.path} is an ADM reference batch (TF bilinear resize); comparing it with "
                          f"{mode!r} features mixes preprocessing modes", MetricWarning, stacklevel=2)
        _networks_differ(source, extractors, from_file)
        missing_stats, missing_keep = plan.stats - frozenset(gaussians), plan.reference_keep - frozenset(features)
        if missing_stats or missing_keep:
            col = collect(NpzImages(Path(source.path)), extractors, missing_stats, missing_keep, batch_size,
                          desc="reference")
            gaussians.update({f: (st.mean, st.covariance) for f, st in col.stats.items()})
            features.update({f: col.features(f) for f in col.kept})
        return Reference(name, gaussians, source.n, features)
    col = collect(source, extractors, plan.stats, plan.reference_keep, batch_size, desc="reference")
    check_count(col.count, name)
    return Reference(name, {f: (st.mean, st.covariance) for f, st in col.stats.items()}, col.count,
                     {f: col.features(f) for f in col.kept})


def check_reference(source, plan: Plan, mode: str) -> None:
    """The checks `prepare_reference` makes before any work: cheap, so a bad reference is
    refused before hours of sampling, not after."""
    if not isinstance(source, ReferenceStats):
        return
    if source.mode is not None and source.mode != mode and any(
            extractor_of(f) == "inception" for f in plan.stats | plan.reference_keep):
        raise InputError(f"{source.path} was computed in mode {source.mode!r}, not {mode!r}; "
                         f"pass --mode {source.mode} or recompute it with nfebench ref-stats --mode {mode}")
    for m in plan.metrics:
        if m in FRECHET and FRECHET[m][1] not in source.gaussians and not source.has_images:
            mu, sigma = stat_names(FRECHET[m][1])
            raise InputError(f"{source.path} has no {FRECHET[m][2]} statistics ({mu}, {sigma}) and no images to "
                             f"compute them from; recompute it with nfebench ref-stats --metrics {m}, or drop {m} "
                             f"from --metrics")
        if m in PAIRWISE and PAIRWISE[m][0] not in source.features and not source.has_images:
            raise InputError(f"{source.path} holds neither reference images (arr_0) nor {PAIRWISE[m][0]}_features; "
                             f"{PAIRWISE[m][1]} needs one of them; recompute it with nfebench ref-stats --metrics "
                             f"{m}, or drop {m} from --metrics")


def check_count(n: int, what: str) -> None:
    if n < MIN_SAMPLES:
        raise InputError(f"{what}: FID needs at least {MIN_SAMPLES} images, got {n}")
    if n < RELIABLE_SAMPLES:
        warnings.warn(f"{what}: {n} images, fewer than {RELIABLE_SAMPLES}: the covariance is singular and FID "
                      f"is biased upwards; compare FIDs only at equal N", MetricWarning, stacklevel=3)


def _set_interval(v: MetricValue, bounds: tuple[float, float], options: MetricOptions) -> None:
    """Put a 95% interval on `v` and say how it was made (none if too few replicates were finite)."""
    if np.isfinite(bounds[0]):
        v.ci_low, v.ci_high = bounds
        v.notes = "; ".join(filter(None, [v.notes, f"95% interval: value +- 1.96 sd over {options.bootstrap} random "
                                          f"halves of the {v.n} samples (half-sampling, seed {BOOTSTRAP_SEED}; "
                                          f"reference fixed)"]))


def compute_metrics(samples: Collected, reference: Reference, plan: Plan, extractors: dict[str, FeatureExtractor],
                    options: MetricOptions, device: str = "cpu") -> list[MetricValue]:
    """The metrics of `plan` for `samples` against `reference`, with 95% intervals (random halves
    of the samples, `harness.metrics.bootstrap`) where the samples' per-image features were kept."""
    check_count(samples.count, "samples")
    n = samples.count
    boot = options.bootstrap and n >= 4 and any(m in INTERVALS for m in plan.metrics)  # halves of 2 or more
    weights = half_sample_weights(n, options.bootstrap) if boot else None
    out = []
    for m in plan.metrics:
        if m not in FRECHET:
            continue
        name, feature, _ = FRECHET[m]
        st, (mu_r, sigma_r) = samples.stats[feature], reference.gaussians[feature]
        value, note = nonnegative(frechet_distance(st.mean, st.covariance, mu_r, sigma_r), st.covariance, sigma_r)
        v = MetricValue(name, value, n, notes=note, network=extractors[extractor_of(feature)].describe(feature),
                        extractor=extractor_of(feature))
        if weights is not None and m in INTERVALS and feature in samples.kept:
            reps = frechet_replicates(samples.features(feature), mu_r, sigma_r, weights, device=device)
            _set_interval(v, interval(value, reps, lower=0.0), options)
        out.append(v)
    if "is" in plan.metrics:
        inc = extractors["inception"]
        value, spread, splits = samples.inception_score.result()
        out.append(MetricValue(results.IS, value, n, spread, f"IS over {splits} split(s) of up to 5000 in sample order "
                               f"(ADM); spread = std over splits; {inc.logits_network}", network=inc.describe("logits"),
                               extractor="inception"))
    if "pr" in plan.metrics or "dc" in plan.metrics:
        ref_feats = reference.features["pool"]
        manifold = manifold_metrics(ref_feats, samples.features("pool"), device=device)
        network = extractors["inception"].describe("pool")
        note = f"k={ADM_K} nearest-neighbour manifolds on pool_3 (ADM), {len(ref_feats)} reference images"
        for m, names in (("pr", (results.PRECISION, results.RECALL)), ("dc", (results.DENSITY, results.COVERAGE))):
            if m in plan.metrics:
                out += [MetricValue(k, manifold[k], n, notes=note, network=network, extractor="inception")
                        for k in names]
    if "kid" in plan.metrics:
        ref_feats = reference.features["pool"]
        r = kid(samples.features("pool"), ref_feats, subsets=options.kid_subsets, subset_size=options.kid_subset_size,
                weights=weights, device=device)
        v = MetricValue(results.KID, r.mean, n, r.std,
                        f"KID: mean (value) and std (spread) over {r.subsets} subset pairs of {r.subset_size} "
                        f"(torch-fidelity's kid_features_to_metric: cubic kernel, unbiased MMD^2, subset seed "
                        f"{KID_SEED}) on pool_3, {len(ref_feats)} reference images",
                        network=extractors["inception"].describe("pool"), extractor="inception")
        if r.replicates is not None:
            _set_interval(v, interval(r.mean, r.replicates), options)  # KID is unbiased: it may be below 0
        out.append(v)
    return out


def compare_sources(a, b, *, metrics: tuple[str, ...] = DEFAULT_METRICS, options: MetricOptions = MetricOptions(),
                    batch_size: int = 50, device: str = "cpu") -> tuple[list[MetricValue], list[str], dict]:
    """Metrics of source `a` (the samples) against source `b` (the reference), as `nfebench fid`.

    IS is computed on `a`; precision and density ask how `a` falls on `b`'s manifold, recall and
    coverage the reverse; FID, sFID and FD-DINOv2 are symmetric; KID and the intervals resample
    `a`. Returns (values, skipped-metric messages, context).

    Args:
        a: the samples: what `open_source` returns (images, or statistics for Frechet distances only).
        b: the reference, likewise.
        metrics: names from `METRIC_CHOICES`.
        options: mode, KID subsets, bootstrap replicates, weight files.
        batch_size: images per network call.
        device: device of the networks (and of KID, precision/recall and the bootstrap).

    Example::

        values, skipped, ctx = compare_sources(open_source("samples.npz"), open_source("ref.npz"),
                                               metrics=("fid", "kid"))
    """
    options.check()
    needs_images = [m for m in metrics if m in PAIRWISE or m == "is"]
    if isinstance(a, ReferenceStats) and needs_images:
        raise InputError(f"{a.path} holds statistics only: {', '.join(needs_images)} need(s) the sample images as "
                         f"the first argument")
    a_stats = isinstance(a, ReferenceStats)
    wanted_intervals = bool(options.bootstrap) and any(m in INTERVALS for m in metrics)
    if a_stats:  # no per-image features on the sample side: nothing to resample
        options = replace(options, bootstrap=0)
    frechet = {FRECHET[m][1] for m in metrics if m in FRECHET}
    if a_stats and isinstance(b, ReferenceStats) and all(f in a.gaussians and f in b.gaussians for f in frechet):
        extractors, plan, skipped = {}, make_plan(metrics, options), []  # statistics only: no network
    else:
        extractors, plan, skipped = open_extractors(metrics, options, device)
    reference = prepare_reference(b, extractors, plan, options.mode, batch_size)
    if a_stats:  # statistics against statistics: Frechet distances only
        ref_a = prepare_reference(a, extractors, replace(plan, reference_keep=frozenset()), options.mode, batch_size)
        if wanted_intervals:
            skipped.append(f"no intervals: {a.path} holds statistics, not the per-image features a bootstrap resamples")
        values = []
        for m in plan.metrics:
            name, feature, _ = FRECHET[m]
            (mu1, s1), (mu2, s2) = ref_a.gaussians[feature], reference.gaussians[feature]
            value, note = nonnegative(frechet_distance(mu1, s1, mu2, s2), s1, s2)
            network = a.networks.get(feature) or "as recorded in the statistics files"
            values.append(MetricValue(name, value, ref_a.n or 0, notes=note, network=network,
                                      extractor=extractor_of(feature)))
    else:
        samples = collect(a, extractors, plan.stats, plan.keep, batch_size, logits=plan.logits, desc="samples")
        values = compute_metrics(samples, reference, plan, extractors, options, device)
    inception = extractors.get("inception")
    context = {"mode": options.mode, "reference": reference.name, "reference_n": reference.n, "quantization": None,
               "network": inception.network if inception else "as recorded in the statistics files",
               "extractor_networks": {name: ext.network for name, ext in extractors.items()}}
    return values, skipped, context


# ----------------------------------------------------------------------------- sampling


class SampleWriter:
    """Writes an ADM sample batch (``arr_0`` uint8 NHWC, ``arr_1`` int64 labels) as images
    arrive, through a temporary file renamed at the end. ADM's evaluator reads it."""

    def __init__(self, path: str | Path, shape: tuple[int, int, int, int]):
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise InputError(f"--save-samples {self.path}: the file name must end in .npz")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.zip = zipfile.ZipFile(self.tmp, "w", allowZip64=True)
        self.member = self.zip.open("arr_0.npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": tuple(shape)}
        np.lib.format.write_array_header_2_0(self.member, header)
        self.labels: list[np.ndarray] = []

    def add(self, images_nchw: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.member.write(images_nchw.permute(0, 2, 3, 1).contiguous().cpu().numpy().tobytes())  # NHWC
        if labels is not None:
            self.labels.append(labels.cpu().numpy().astype(np.int64))

    def close(self) -> None:
        self.member.close()
        if self.labels:
            buf = io.BytesIO()
            np.save(buf, np.concatenate(self.labels))
            self.zip.writestr("arr_1.npy", buf.getvalue())
        self.zip.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        self.member.close()
        self.zip.close()
        self.tmp.unlink(missing_ok=True)


def as_torch(x) -> torch.Tensor:
    """A sampler's output as a torch tensor: a JAX or numpy array comes through host memory
    (bfloat16, which torch cannot take from numpy, as float32), so a JAX sampler evaluates
    unchanged."""
    if isinstance(x, torch.Tensor):
        return x
    a = np.array(x)  # a writable host copy: a JAX array's own buffer is read-only
    try:
        return torch.from_numpy(a)
    except TypeError:
        return torch.from_numpy(a.astype(np.float32))


def generate_images(sampler, num_samples: int, batch_size: int, seed: int, *, guidance: float | None = None,
                    start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """uint8 images (B, 3, H, W) and labels of samples start..start+num_samples-1: sample i
    from (seed, i) alone, so the images do not depend on the batch size. Non-finite decoded
    values raise `NonFiniteSampleError`."""
    info = sampler.info
    for lo in range(start, start + num_samples, batch_size):
        idx = range(lo, min(lo + batch_size, start + num_samples))
        noise = sample_noise(seed, idx, info.sample_shape)
        labels = sample_labels(seed, idx, info.num_classes)
        x = sampler.generate(noise, labels, guidance=guidance)
        # Checked here too: a sampler not built on TorchSampler may not check its output, and
        # quantize would turn NaN into 0 without a word.
        images = check_finite(as_torch(sampler.decode(x)).float(), f"{info.name} decoded samples")
        yield quantize(images), labels  # (B, 3, H, W) uint8




def _shard_features(sampler, extractors: dict[str, FeatureExtractor], idx: range, *, batch_size: int, seed: int,
                    guidance: float | None, features: frozenset[str], keep_images: bool,
                    bar=None) -> dict[str, np.ndarray]:
    """Sample, decode and featurise the samples `idx` of one shard: the arrays of its shard file.

    Features are kept raw (float32, as the networks give them) and turned into statistics
    only when shards are merged, in shard order, so the statistics depend on neither the
    batch size nor the number of processes. A sampler that makes NaN or Inf is bad input to
    the evaluation (an InputError: exit 2), reported with the samples it happened in."""
    size = sampler.info.image_size
    parts: dict[str, list[np.ndarray]] = {f: [] for f in sorted(features)}
    images_, labels_ = [], []
    try:
        for images, labels in generate_images(sampler, len(idx), batch_size, seed, guidance=guidance,
                                              start=idx.start):
            if tuple(images.shape[1:]) != (3, size, size):
                raise InputError(f"{sampler.info.name} decoded images of shape {tuple(images.shape[1:])}, "
                                 f"expected (3, {size}, {size}) from its ModelInfo")
            f = extract_all(extractors, images, features)
            for name, part in parts.items():
                part.append(f[name].float().cpu().numpy())  # (B, D)
            if keep_images:
                images_.append(images.permute(0, 2, 3, 1).contiguous().cpu().numpy())  # (B, H, W, 3), ADM layout
                if labels is not None:
                    labels_.append(labels.numpy().astype(np.int64))
            if bar is not None:
                bar.update(len(images))
    except NonFiniteSampleError as exc:
        raise InputError(f"{sampler.info.name} made non-finite samples (NaN or Inf) among samples "
                         f"{idx.start}-{idx.stop - 1} of seed {seed}: {exc}; no rows were written") from exc
    out = {"count": np.int64(len(idx)), "start": np.int64(idx.start)}
    out.update({name: np.concatenate(part) for name, part in parts.items()})
    if keep_images:
        out["images"] = np.concatenate(images_)
        if labels_:
            out["labels"] = np.concatenate(labels_)
    return out


def shard_stats(features: np.ndarray) -> RunningStats:
    """float64 count, mean and co-moment of one shard's features (S, D), on one thread.

    One thread because a multi-threaded BLAS may round differently with the thread count
    (numpy's OpenBLAS was measured to, by 1e-16 on a 2023-wide co-moment), and the merged
    statistics must not depend on how the merging process was started. The
    (1000 x 2048)^T (1000 x 2048) product takes 0.3 s on one core of a 2-core test machine."""
    if not np.isfinite(features).all():
        raise InputError("features contain NaN or Inf; check the images fed to the network")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.from_numpy(np.asarray(features)).double()  # (S, D)
        mean = x.mean(0)  # (D,)
        centred = x - mean
        comoment = centred.T @ centred  # (D, D)
    finally:
        torch.set_num_threads(threads)
    return RunningStats.from_state({"count": len(x), "mean": mean.numpy(), "comoment": comoment.numpy()})


def _merge_shards(wd: WorkDir, num_shards: int, plan: Plan, extractors: dict[str, FeatureExtractor],
                  writer: SampleWriter | None) -> Collected:
    """Statistics of all shards, merged in shard order (Chan et al., float64): the same
    numbers for any world size and batch size. IS logits are taken here from the stored
    pool_3 features (on the CPU, in shard order) for the same reason."""
    result = Collected.empty(plan.stats, plan.keep, plan.logits)
    weight = extractors["inception"].logits_weight.detach().cpu().float() if plan.logits else None
    for s in range(num_shards):
        shard = wd.read_shard(s)
        result.count += int(shard["count"])
        for name, st in result.stats.items():
            st.merge(shard_stats(shard[name]))
        for name, kept in result.kept.items():
            kept.append(shard[name])
        if weight is not None:
            result.inception_score.update(torch.from_numpy(shard["pool"]) @ weight.T)  # (S, 1008)
        if writer is not None:
            writer.add(torch.from_numpy(shard["images"]).permute(0, 3, 1, 2),
                       torch.from_numpy(shard["labels"]) if "labels" in shard else None)
    return result


def _finish(wd: WorkDir, sampler, reference, extractors: dict[str, FeatureExtractor], plan: Plan,
            options: MetricOptions, context: dict, *, num_samples: int, num_shards: int, batch_size: int,
            device: str, save_samples: str | Path | None, keep: bool) -> list[MetricValue]:
    """On rank 0, once every shard is stored: the reference (computed now, so the other ranks
    never wait for it), the merged statistics, the samples file, the metrics; with `keep` the
    statistics and result are written to the work dir too."""
    ref = prepare_reference(reference, extractors, plan, options.mode, batch_size)
    size = sampler.info.image_size
    writer = SampleWriter(save_samples, (num_samples, size, size, 3)) if save_samples else None
    try:
        collected = _merge_shards(wd, num_shards, plan, extractors, writer)
    except BaseException:
        if writer:
            writer.abort()
        raise
    if writer:
        writer.close()
    values = compute_metrics(collected, ref, plan, extractors, options, device)
    context.update(reference=ref.name, reference_n=ref.n)
    if keep:
        if "pool" in collected.stats:  # a statistics file is one with pool_3's mu and sigma
            save_stats(wd.stats_path, collected.stats, mode=options.mode,
                       networks={f: extractors[extractor_of(f)].network for f in plan.stats | plan.reference_keep},
                       features={f: collected.features(f) for f in plan.reference_keep})
        wd.write_result({"values": [asdict(v) for v in values], "context": context})
    return values


def _source_digest(source) -> str:
    """What identifies a reference for the work-dir manifest: a file's sha256, or a folder's
    sorted file names and sizes (hashing 50,000 images would cost more than it protects)."""
    import hashlib

    if isinstance(source, ImageFolder):
        h = hashlib.sha256()
        for f in source.files:
            h.update(f"{f.relative_to(source.path)}:{f.stat().st_size}\n".encode())
        return f"folder-sha256:{h.hexdigest()}"
    return f"sha256:{results.file_digest(source.path, 'sha256')}"


def run_manifest(sampler, reference, extractors: dict[str, FeatureExtractor], plan: Plan, options: MetricOptions, *,
                 num_samples: int, seed: int, guidance: float | None, device: str, shard_size: int,
                 save_samples: bool, settings: dict | None) -> dict:
    """Every setting that changes a work dir's shards or result (batch size and world size
    do not, by construction)."""
    from harness import __version__
    from adapters.api.sampler import weights_with_decoder

    info = sampler.info
    networks = {f: extractors[extractor_of(f)].describe(f) for f in sorted(plan.extract)}
    return {"model": info.name, "weights": weights_with_decoder(info.weights, getattr(sampler, "decoder_weights", None)),
            "dtype": str(getattr(sampler, "dtype", "")), "num_samples": num_samples, "seed": seed,
            "guidance": guidance, "metrics": sorted(plan.metrics), "mode": options.mode,
            "reference": _source_digest(reference), "networks": networks, "metric_options": options.settings(),
            "shard_size": shard_size, "save_samples": save_samples, "device_type": torch.device(device).type,
            "nfebench_version": __version__, **(settings or {})}


def evaluate_sampler(sampler, reference, *, num_samples: int, batch_size: int, seed: int,
                     guidance: float | None = None, metrics: tuple[str, ...] = DEFAULT_METRICS,
                     options: MetricOptions = MetricOptions(), device: str = "cpu",
                     save_samples: str | Path | None = None, work_dir: str | Path | None = None,
                     shard_size: int = DEFAULT_SHARD_SIZE, world: World | None = None,
                     settings: dict | None = None) -> tuple[list[MetricValue], list[str], dict]:
    """Sample `num_samples` images and measure them against `reference`, in shards, on one
    process or many, resumably.

    Sample i's noise and label come from (seed, i); shard s holds samples
    [s * shard_size, (s + 1) * shard_size). Shards are dealt round-robin to the ranks of
    `world`; rank 0 stores each finished shard (in `work_dir`, else a temporary folder),
    merges them in shard order and computes the metrics, so the numbers are the same for
    any world size and batch size (given batch-invariant features; see the README).

    Args:
        sampler: a `adapters.api.sampler.Sampler` (e.g. from `adapters.load_sampler`); outputs
            that are not torch tensors (JAX, numpy) are converted.
        reference: what `open_source` returns for the reference (ADM batch, statistics, images).
        num_samples: N; FID is reported with it (50,000 for the standard FID-50K).
        batch_size: images per generate/decode/network call.
        seed: noise and labels of sample i come from (seed, i) (`adapters.api.seeding`).
        guidance: classifier-free guidance scale passed to the sampler (None: its default).
        metrics: names from `METRIC_CHOICES`.
        options: mode, KID subsets, bootstrap replicates, weight files (`MetricOptions`).
        device: device of the feature networks (and of KID, precision/recall, the bootstrap).
        save_samples: write the uint8 samples as an ADM sample batch (.npz) here.
        work_dir: keep shards, manifest and result here (`harness.workdir`): a rerun resumes,
            a finished run is reported again without work, other settings are refused.
        shard_size: samples per shard (part of the result: the merge order follows shards).
        world: this process's `harness.distributed.World` (default: a single process).
        settings: further settings that change the samples, for the manifest (e.g. the
            config overrides the sampler was built with).

    Returns:
        (metric values, messages about skipped metrics, context dict for the rows); on
        ranks other than 0 the values are empty: rank 0 alone reports.

    Example::

        values, skipped, ctx = evaluate_sampler(load_sampler("sit-b2"), open_source("ref.npz"),
                                                num_samples=1000, batch_size=50, seed=0,
                                                metrics=("fid", "kid"), work_dir="runs/sit-b2-fid1k")
    """
    from tqdm.auto import tqdm

    if num_samples < MIN_SAMPLES:
        raise InputError(f"--num-samples must be at least {MIN_SAMPLES}, got {num_samples}")
    check_batch_size(batch_size)
    options.check()
    world = world or World()
    shards = shard_ranges(num_samples, shard_size)
    extractors, plan, skipped = run_checked(world, lambda: open_extractors(metrics, options, device))
    check_reference(reference, plan, options.mode)
    inception = extractors.get("inception")
    context = {"mode": options.mode, "network": inception.network if inception else "",
               "extractor_networks": {name: ext.network for name, ext in extractors.items()},
               "reference": str(getattr(reference, "path", reference)), "quantization": QUANTIZATION,
               "world_size": world.size, "shard_size": shard_size,
               "work_dir": None if work_dir is None else str(work_dir)}
    with contextlib.ExitStack() as stack:
        wd: WorkDir | None = None

        def open_work_dir():  # rank 0 alone holds the work dir: no shared file system needed
            nonlocal wd
            if work_dir is None:
                where = Path(save_samples).parent if save_samples else None  # as big as the samples file
                if where is not None:
                    where.mkdir(parents=True, exist_ok=True)
                wd = WorkDir(stack.enter_context(tempfile.TemporaryDirectory(prefix="nfebench-eval-", dir=where)), {})
            else:
                wd = WorkDir(work_dir, run_manifest(
                    sampler, reference, extractors, plan, options, num_samples=num_samples, seed=seed,
                    guidance=guidance, device=device, shard_size=shard_size, save_samples=bool(save_samples),
                    settings=settings))
            wd.open()
            finished = wd.result()
            return {"done": [] if finished else wd.done(shards), "finished": finished}

        state = run_on_root(world, open_work_dir)
        if state["finished"] is not None:  # a finished run: reported again, not redone
            stored = state["finished"]
            values = [MetricValue(**v) for v in stored["values"]] if world.is_root else []
            return values, skipped, {**stored["context"], "reused": True}
        todo = [s for s, done in enumerate(state["done"]) if not done]
        done_images = num_samples - sum(len(shards[s]) for s in todo)
        keep_images = bool(save_samples)
        bar = stack.enter_context(tqdm(total=num_samples, initial=done_images, desc=f"eval {sampler.info.name}",
                                       unit="img", disable=not world.is_root))
        for assignment in rounds(todo, world.size):
            mine = assignment[world.rank]

            def work():
                if mine is None:
                    return None
                return mine, _shard_features(sampler, extractors, shards[mine], batch_size=batch_size, seed=seed,
                                             guidance=guidance, features=plan.stored, keep_images=keep_images,
                                             bar=bar if world.is_root else None)

            parts = run_and_exchange(world, work)

            def store():  # rank 0 writes; a failed write stops every rank at once
                for rank, part in enumerate(parts or []):
                    if part is not None:
                        wd.write_shard(*part)
                        if rank != world.rank:
                            bar.update(int(part[1]["count"]))

            run_on_root(world, store)
        bar.close()
        # The other ranks wait for rank 0's merge: a failure there fails them too, and every
        # process leaves the process group together.
        values = run_on_root(world, lambda: _finish(
            wd, sampler, reference, extractors, plan, options, context, num_samples=num_samples,
            num_shards=len(shards), batch_size=batch_size, device=device, save_samples=save_samples,
            keep=work_dir is not None))
    return (values, skipped, context) if world.is_root else ([], skipped, context)
