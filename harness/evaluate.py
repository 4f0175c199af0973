"""Sample -> decode -> uint8 -> features -> metrics, and the same from image files.

Images stream through in batches: Inception features update float64 running statistics
(pool_3 for FID, mixed_6/conv for sFID), the Inception Score accumulator and, only when
precision/recall is asked for, a list of pool_3 vectors (2048 float32 per image).

Inputs the file path accepts (`open_source`): a folder of images, an ``.npz`` of uint8
NHWC images in ``arr_0`` (an ADM sample batch, read in a stream), or a statistics ``.npz``
(ADM reference batch, clean-fid or nfebench statistics; see `harness.metrics.fid`).

Example::

    from adapters import load_sampler
    from harness.evaluate import evaluate_sampler, open_source
    s = load_sampler("rf-b2", checkpoint="rf-b2.pt")
    metrics = evaluate_sampler(s, open_source("VIRTUAL_imagenet256_labeled.npz"), num_samples=50_000,
                               batch_size=64, seed=0)
    metrics["fid"].value
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from harness import results
from harness.errors import InputError
from harness.metrics.fid import ReferenceStats, RunningStats, frechet_distance, is_stats_file, load_stats
from harness.metrics.inception import POOL_DIM, SPATIAL_DIM, InceptionFeatures, logits_missing_message
from harness.metrics.inception_score import InceptionScore
from harness.metrics.prdc import precision_recall
from harness.metrics.preprocess import ADM, QUANTIZATION, as_nchw_uint8, check_mode, quantize
from harness.seeding import sample_labels, sample_noise

METRIC_CHOICES = ("fid", "is", "sfid", "pr")  # --metrics names; "pr" gives precision and recall
DEFAULT_METRICS = ("fid",)
MIN_SAMPLES, RELIABLE_SAMPLES = 2, 2048


class MetricWarning(UserWarning):
    """A number that will be computed but deserves a caveat (few samples, mixed modes)."""


IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}  # as clean-fid


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``"fid,is"`` -> ("fid", "is"); unknown names are an InputError."""
    names = tuple(m.strip() for m in (text or ",".join(DEFAULT_METRICS)).split(",") if m.strip())
    unknown = [m for m in names if m not in METRIC_CHOICES]
    if unknown or not names:
        raise InputError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METRIC_CHOICES)}")
    return names


# ----------------------------------------------------------------------------- image sources


class ImageFolder:
    """Images in a folder (recursively, sorted by path), as uint8 NHWC batches; all one size."""

    def __init__(self, path: Path):
        self.path = path
        self.files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.files:
            raise InputError(f"{path}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.count = len(self.files)

    def _read(self, file: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(file) as img:
                return np.asarray(img.convert("RGB"))  # (H, W, 3) uint8, as clean-fid and torch-fidelity read
        except Exception as exc:
            raise InputError(f"cannot read image {file}: {exc}") from exc

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        shape = None
        for start in range(0, self.count, batch_size):
            imgs = [self._read(f) for f in self.files[start:start + batch_size]]
            for f, img in zip(self.files[start:start + batch_size], imgs):
                shape = shape or img.shape
                if img.shape != shape:
                    raise InputError(f"{f} is {img.shape[1]}x{img.shape[0]}, the folder's first image is "
                                     f"{shape[1]}x{shape[0]}; all images of a folder must have one size")
            yield np.stack(imgs)  # (B, H, W, 3)


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


@dataclass
class Collected:
    """What the metrics need from one set of images."""

    pool: RunningStats
    spatial: RunningStats | None
    inception_score: InceptionScore | None
    pool_features: list[np.ndarray] | None = field(default=None)

    @property
    def count(self) -> int:
        return self.pool.count

    def features(self) -> np.ndarray | None:
        return None if self.pool_features is None else np.concatenate(self.pool_features)


class FeatureCollector:
    """Feeds uint8 batches through Inception and accumulates what `metrics` need.

    Example::

        col = FeatureCollector(InceptionFeatures(), metrics=("fid", "sfid"), mode="adm")
        for batch in source.batches(64):
            col.add(batch)
        col.result.pool.mean
    """

    def __init__(self, extractor: InceptionFeatures, metrics: tuple[str, ...], mode: str = ADM,
                 keep_features: bool = False):
        self.extractor = extractor
        self.mode = check_mode(mode)
        want_is = "is" in metrics and extractor.logits_weight is not None
        self.result = Collected(
            pool=RunningStats(POOL_DIM),
            spatial=RunningStats(SPATIAL_DIM) if "sfid" in metrics else None,
            inception_score=InceptionScore() if want_is else None,
            pool_features=[] if ("pr" in metrics or keep_features) else None,
        )

    def add(self, images) -> None:
        r = self.result
        f = self.extractor(images, self.mode, spatial=r.spatial is not None)
        r.pool.update(f["pool"])
        if r.spatial is not None:
            r.spatial.update(f["spatial"])
        if r.inception_score is not None:
            r.inception_score.update(f["logits"])
        if r.pool_features is not None:
            r.pool_features.append(f["pool"].float().cpu().numpy())


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer, got {batch_size}")


def collect(source: ImageFolder | NpzImages, extractor: InceptionFeatures, metrics: tuple[str, ...], mode: str,
            batch_size: int, *, keep_features: bool = False, desc: str = "features") -> Collected:
    """Features of every image of `source`, with a tqdm progress bar."""
    from tqdm.auto import tqdm

    check_batch_size(batch_size)
    col = FeatureCollector(extractor, metrics, mode, keep_features)
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


@dataclass
class Reference:
    """The other side of a comparison: statistics and, for precision/recall, pool_3 features."""

    name: str
    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray | None
    sigma_s: np.ndarray | None
    n: int | None
    features: np.ndarray | None


def prepare_reference(source, extractor: InceptionFeatures | None, metrics: tuple[str, ...], mode: str,
                      batch_size: int) -> Reference:
    """Statistics from a file, or computed from images; reference images' pool_3 features are
    extracted only if precision/recall is asked for and no features are stored."""
    name = str(getattr(source, "path", source))
    if isinstance(source, ReferenceStats):
        if source.mode is not None and source.mode != mode:
            raise InputError(f"{source.path} was computed in mode {source.mode!r}, not {mode!r}; "
                             f"pass --mode {source.mode} or recompute it with nfebench ref-stats --mode {mode}")
        if source.kind == "adm" and mode != ADM:
            warnings.warn(f"{source.path} is an ADM reference batch (TF bilinear resize); comparing it with "
                          f"{mode!r} features mixes preprocessing modes", MetricWarning, stacklevel=2)
        if "sfid" in metrics and source.mu_s is None:
            raise InputError(f"{source.path} has no sFID statistics (mu_s, sigma_s); drop sfid from --metrics")
        features = source.pool_features
        if "pr" in metrics and features is None:
            if not source.has_images:
                raise InputError(f"{source.path} holds neither reference images (arr_0) nor pool_features; "
                                 f"precision/recall needs one of them; drop pr from --metrics")
            col = collect(NpzImages(Path(source.path)), extractor, ("pr",), mode, batch_size, desc="reference")
            features = col.features()
        return Reference(name, source.mu, source.sigma, source.mu_s, source.sigma_s, source.n, features)
    col = collect(source, extractor, metrics, mode, batch_size, desc="reference")
    check_count(col.count, name)
    spatial = col.spatial
    mu_s, sigma_s = (spatial.mean, spatial.covariance) if spatial is not None else (None, None)
    return Reference(name, col.pool.mean, col.pool.covariance, mu_s, sigma_s, col.count, col.features())


def check_count(n: int, what: str) -> None:
    if n < MIN_SAMPLES:
        raise InputError(f"{what}: FID needs at least {MIN_SAMPLES} images, got {n}")
    if n < RELIABLE_SAMPLES:
        warnings.warn(f"{what}: {n} images, fewer than {RELIABLE_SAMPLES}: the covariance is singular and FID "
                      f"is biased upwards; compare FIDs only at equal N", MetricWarning, stacklevel=3)


def compute_metrics(samples: Collected, reference: Reference, metrics: tuple[str, ...],
                    extractor: InceptionFeatures) -> tuple[list[MetricValue], list[str]]:
    """The asked-for metrics of `samples` against `reference`: (values, messages about skipped ones)."""
    check_count(samples.count, "samples")
    n = samples.count
    out, skipped = [], []
    if "fid" in metrics:
        out.append(MetricValue(results.FID, frechet_distance(samples.pool.mean, samples.pool.covariance,
                                                             reference.mu, reference.sigma), n))
    if "sfid" in metrics:
        out.append(MetricValue(results.SFID, frechet_distance(samples.spatial.mean, samples.spatial.covariance,
                                                              reference.mu_s, reference.sigma_s), n))
    if "is" in metrics:
        if samples.inception_score is None:
            skipped.append(logits_missing_message())
        else:
            value, spread, splits = samples.inception_score.result()
            out.append(MetricValue(results.IS, value, n, spread,
                                   f"IS over {splits} split(s) of up to 5000 in sample order (ADM); "
                                   f"spread = std over splits; {extractor.logits_network}"))
    if "pr" in metrics:
        p, r = precision_recall(reference.features, samples.features())
        note = f"k=3 nearest-neighbour manifolds on pool_3 (ADM), {len(reference.features)} reference images"
        out += [MetricValue(results.PRECISION, p, n, notes=note), MetricValue(results.RECALL, r, n, notes=note)]
    return out, skipped


def compare_sources(a, b, *, metrics: tuple[str, ...] = DEFAULT_METRICS, mode: str = ADM, batch_size: int = 50,
                    device: str = "cpu", logits_path: str | None = None) -> tuple[list[MetricValue], list[str], dict]:
    """Metrics of source `a` (the samples) against source `b` (the reference), as `nfebench fid`.

    IS is computed on `a`; precision is the fraction of `a` inside `b`'s manifold, recall the
    reverse; FID and sFID are symmetric. Returns (values, skipped-metric messages, context).

    Example::

        values, skipped, ctx = compare_sources(open_source("samples.npz"), open_source("ref.npz"))
    """
    check_mode(mode)
    if isinstance(a, ReferenceStats) and any(m in metrics for m in ("is", "pr")):
        raise InputError(f"{a.path} holds statistics only: IS and precision/recall need the sample images "
                         f"as the first argument")
    both_stats = isinstance(a, ReferenceStats) and isinstance(b, ReferenceStats)
    extractor = None if both_stats else _extractor(device, logits_path, metrics)  # no images: no network
    reference = prepare_reference(b, extractor, metrics, mode, batch_size)
    if isinstance(a, ReferenceStats):  # statistics against statistics: FID and sFID only
        ref_a = prepare_reference(a, extractor, metrics, mode, batch_size)
        n = ref_a.n or 0
        values, skipped = [], []
        if "fid" in metrics:
            values.append(MetricValue(results.FID, frechet_distance(ref_a.mu, ref_a.sigma, reference.mu,
                                                                    reference.sigma), n))
        if "sfid" in metrics:
            values.append(MetricValue(results.SFID, frechet_distance(ref_a.mu_s, ref_a.sigma_s, reference.mu_s,
                                                                     reference.sigma_s), n))
    else:
        samples = collect(a, extractor, metrics, mode, batch_size, desc="samples")
        values, skipped = compute_metrics(samples, reference, metrics, extractor)
    network = extractor.network if extractor else "as recorded in the statistics files"
    context = {"mode": mode, "network": network, "reference": reference.name, "reference_n": reference.n,
               "quantization": None}
    return values, skipped, context


def _extractor(device: str, logits_path: str | None, metrics: tuple[str, ...]) -> InceptionFeatures:
    from harness.metrics.inception import find_logits_file

    logits = find_logits_file(logits_path) if "is" in metrics else None
    return InceptionFeatures(device, logits_path=logits)


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


def generate_images(sampler, num_samples: int, batch_size: int, seed: int, *, guidance: float | None = None,
                    start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """uint8 images (B, 3, H, W) and labels of samples start..start+num_samples-1: sample i
    from (seed, i) alone, so the images do not depend on the batch size."""
    info = sampler.info
    for lo in range(start, start + num_samples, batch_size):
        idx = range(lo, min(lo + batch_size, start + num_samples))
        noise = sample_noise(seed, idx, info.sample_shape)
        labels = sample_labels(seed, idx, info.num_classes)
        x = sampler.generate(noise, labels, guidance=guidance)
        yield quantize(sampler.decode(x).float()), labels  # (B, 3, H, W) uint8


def evaluate_sampler(sampler, reference, *, num_samples: int, batch_size: int, seed: int,
                     guidance: float | None = None, metrics: tuple[str, ...] = DEFAULT_METRICS, mode: str = ADM,
                     device: str = "cpu", logits_path: str | None = None,
                     save_samples: str | Path | None = None) -> tuple[list[MetricValue], list[str], dict]:
    """Sample `num_samples` images and measure them against `reference`.

    Args:
        sampler: a `harness.sampler.Sampler` (e.g. from `adapters.load_sampler`).
        reference: what `open_source` returns for the reference (ADM batch, statistics, images).
        num_samples: N; FID is reported with it (50,000 for the standard FID-50K).
        batch_size: images per generate/decode/Inception call.
        seed: noise and labels of sample i come from (seed, i) (`harness.seeding`).
        guidance: classifier-free guidance scale passed to the sampler (None: its default).
        metrics: subset of ``fid, is, sfid, pr``.
        mode: ``adm`` or ``clean`` preprocessing.
        device: device of the Inception network.
        logits_path: torch-fidelity's Inception weight file for IS (default: looked up).
        save_samples: write the uint8 samples as an ADM sample batch (.npz) here.

    Returns:
        (metric values, messages about skipped metrics, context dict for the rows).

    Example::

        values, skipped, ctx = evaluate_sampler(load_sampler("rf-b2"), open_source("ref.npz"),
                                                num_samples=1000, batch_size=50, seed=0)
    """
    from tqdm.auto import tqdm

    if num_samples < MIN_SAMPLES:
        raise InputError(f"--num-samples must be at least {MIN_SAMPLES}, got {num_samples}")
    check_batch_size(batch_size)
    check_mode(mode)
    extractor = _extractor(device, logits_path, metrics)
    ref = prepare_reference(reference, extractor, metrics, mode, batch_size)
    col = FeatureCollector(extractor, metrics, mode)
    size = sampler.info.image_size
    writer = SampleWriter(save_samples, (num_samples, size, size, 3)) if save_samples else None
    try:
        with tqdm(total=num_samples, desc=f"eval {sampler.info.name}", unit="img") as bar:
            for images, labels in generate_images(sampler, num_samples, batch_size, seed, guidance=guidance):
                if tuple(images.shape[1:]) != (3, size, size):
                    raise InputError(f"{sampler.info.name} decoded images of shape {tuple(images.shape[1:])}, "
                                     f"expected (3, {size}, {size}) from its ModelInfo")
                col.add(images)
                if writer:
                    writer.add(images, labels)
                bar.update(len(images))
    except BaseException:
        if writer:
            writer.abort()
        raise
    if writer:
        writer.close()
    values, skipped = compute_metrics(col.result, ref, metrics, extractor)
    context = {"mode": mode, "network": extractor.network, "reference": ref.name, "reference_n": ref.n,
               "quantization": QUANTIZATION}
    return values, skipped, context
