"""Sample -> decode -> uint8 -> features -> metrics, and the same from image files.

Image files stream through in batches: Inception features update float64 running statistics
(pool_3 for FID, mixed_6/conv for sFID), the Inception Score accumulator and, only when
precision/recall is asked for, a list of pool_3 vectors (2048 float32 per image).

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
    s = load_sampler("rf-b2", checkpoint="rf-b2.pt")
    metrics = evaluate_sampler(s, open_source("VIRTUAL_imagenet256_labeled.npz"), num_samples=50_000,
                               batch_size=64, seed=0)
    metrics["fid"].value
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from harness import results
from harness.distributed import World, rounds, run_and_exchange, run_checked, run_on_root
from harness.errors import InputError
from harness.metrics.fid import (ReferenceStats, RunningStats, frechet_distance, is_stats_file, load_stats,
                                 save_stats)
from harness.metrics.inception import POOL_DIM, SPATIAL_DIM, InceptionFeatures, logits_missing_message
from harness.metrics.inception_score import InceptionScore
from harness.metrics.prdc import precision_recall
from harness.metrics.preprocess import ADM, QUANTIZATION, as_nchw_uint8, check_mode, quantize
from harness.seeding import sample_labels, sample_noise
from harness.workdir import DEFAULT_SHARD_SIZE, WorkDir, shard_ranges

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
    check_reference(source, metrics, mode)
    if isinstance(source, ReferenceStats):
        if source.kind == "adm" and mode != ADM:
            warnings.warn(f"{source.path} is an ADM reference batch (TF bilinear resize); comparing it with "
                          f"{mode!r} features mixes preprocessing modes", MetricWarning, stacklevel=2)
        features = source.pool_features
        if "pr" in metrics and features is None:
            col = collect(NpzImages(Path(source.path)), extractor, ("pr",), mode, batch_size, desc="reference")
            features = col.features()
        return Reference(name, source.mu, source.sigma, source.mu_s, source.sigma_s, source.n, features)
    col = collect(source, extractor, metrics, mode, batch_size, desc="reference")
    check_count(col.count, name)
    spatial = col.spatial
    mu_s, sigma_s = (spatial.mean, spatial.covariance) if spatial is not None else (None, None)
    return Reference(name, col.pool.mean, col.pool.covariance, mu_s, sigma_s, col.count, col.features())


def check_reference(source, metrics: tuple[str, ...], mode: str) -> None:
    """The checks `prepare_reference` makes before any work: cheap, so a bad reference is
    refused before hours of sampling, not after."""
    if not isinstance(source, ReferenceStats):
        return
    if source.mode is not None and source.mode != mode:
        raise InputError(f"{source.path} was computed in mode {source.mode!r}, not {mode!r}; "
                         f"pass --mode {source.mode} or recompute it with nfebench ref-stats --mode {mode}")
    if "sfid" in metrics and source.mu_s is None:
        raise InputError(f"{source.path} has no sFID statistics (mu_s, sigma_s); drop sfid from --metrics")
    if "pr" in metrics and source.pool_features is None and not source.has_images:
        raise InputError(f"{source.path} holds neither reference images (arr_0) nor pool_features; "
                         f"precision/recall needs one of them; drop pr from --metrics")


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
    from (seed, i) alone, so the images do not depend on the batch size."""
    info = sampler.info
    for lo in range(start, start + num_samples, batch_size):
        idx = range(lo, min(lo + batch_size, start + num_samples))
        noise = sample_noise(seed, idx, info.sample_shape)
        labels = sample_labels(seed, idx, info.num_classes)
        x = sampler.generate(noise, labels, guidance=guidance)
        yield quantize(as_torch(sampler.decode(x)).float()), labels  # (B, 3, H, W) uint8


def _shard_features(sampler, extractor: InceptionFeatures, idx: range, *, batch_size: int, seed: int,
                    guidance: float | None, mode: str, spatial: bool, keep_images: bool,
                    bar=None) -> dict[str, np.ndarray]:
    """Sample, decode and featurise the samples `idx` of one shard: the arrays of its shard file.

    Features are kept raw (float32, as the network gives them) and turned into statistics
    only when shards are merged, in shard order, so the statistics depend on neither the
    batch size nor the number of processes."""
    size = sampler.info.image_size
    pools, spatials, images_, labels_ = [], [], [], []
    for images, labels in generate_images(sampler, len(idx), batch_size, seed, guidance=guidance, start=idx.start):
        if tuple(images.shape[1:]) != (3, size, size):
            raise InputError(f"{sampler.info.name} decoded images of shape {tuple(images.shape[1:])}, "
                             f"expected (3, {size}, {size}) from its ModelInfo")
        f = extractor(images, mode, spatial=spatial)
        pools.append(f["pool"].float().cpu().numpy())  # (B, 2048)
        if spatial:
            spatials.append(f["spatial"].float().cpu().numpy())  # (B, 2023)
        if keep_images:
            images_.append(images.permute(0, 2, 3, 1).contiguous().cpu().numpy())  # (B, H, W, 3), ADM layout
            if labels is not None:
                labels_.append(labels.numpy().astype(np.int64))
        if bar is not None:
            bar.update(len(images))
    out = {"count": np.int64(len(idx)), "start": np.int64(idx.start), "pool": np.concatenate(pools)}
    if spatial:
        out["spatial"] = np.concatenate(spatials)
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


def _merge_shards(wd: WorkDir, num_shards: int, metrics: tuple[str, ...], extractor: InceptionFeatures,
                  writer: SampleWriter | None) -> Collected:
    """Statistics of all shards, merged in shard order (Chan et al., float64): the same
    numbers for any world size and batch size. IS logits are taken here from the stored
    pool_3 features (on the CPU, in shard order) for the same reason."""
    result = Collected(pool=RunningStats(POOL_DIM), spatial=RunningStats(SPATIAL_DIM) if "sfid" in metrics else None,
                       inception_score=InceptionScore() if "is" in metrics and extractor.logits_weight is not None
                       else None, pool_features=[] if "pr" in metrics else None)
    weight = None if result.inception_score is None else extractor.logits_weight.detach().cpu().float()
    for s in range(num_shards):
        shard = wd.read_shard(s)
        result.pool.merge(shard_stats(shard["pool"]))
        if result.spatial is not None:
            result.spatial.merge(shard_stats(shard["spatial"]))
        if weight is not None:
            result.inception_score.update(torch.from_numpy(shard["pool"]) @ weight.T)  # (S, 1008)
        if result.pool_features is not None:
            result.pool_features.append(shard["pool"])
        if writer is not None:
            writer.add(torch.from_numpy(shard["images"]).permute(0, 3, 1, 2),
                       torch.from_numpy(shard["labels"]) if "labels" in shard else None)
    return result


def _finish(wd: WorkDir, sampler, reference, extractor: InceptionFeatures, context: dict, *, num_samples: int,
            num_shards: int, metrics: tuple[str, ...], mode: str, batch_size: int, save_samples: str | Path | None,
            keep: bool) -> tuple[list[MetricValue], list[str]]:
    """On rank 0, once every shard is stored: the reference (computed now, so the other ranks
    never wait for it), the merged statistics, the samples file, the metrics; with `keep` the
    statistics and result are written to the work dir too."""
    ref = prepare_reference(reference, extractor, metrics, mode, batch_size)
    size = sampler.info.image_size
    writer = SampleWriter(save_samples, (num_samples, size, size, 3)) if save_samples else None
    try:
        collected = _merge_shards(wd, num_shards, metrics, extractor, writer)
    except BaseException:
        if writer:
            writer.abort()
        raise
    if writer:
        writer.close()
    values, skipped = compute_metrics(collected, ref, metrics, extractor)
    context.update(reference=ref.name, reference_n=ref.n)
    if keep:
        save_stats(wd.stats_path, collected.pool, collected.spatial, mode=mode, network=extractor.network,
                   pool_features=collected.features())
        wd.write_result({"values": [asdict(v) for v in values], "skipped": skipped, "context": context})
    return values, skipped


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


def run_manifest(sampler, reference, extractor: InceptionFeatures, *, num_samples: int, seed: int,
                 guidance: float | None, metrics: tuple[str, ...], mode: str, device: str, shard_size: int,
                 save_samples: bool, logits_path: str | None, settings: dict | None) -> dict:
    """Every setting that changes a work dir's shards or result (batch size and world size
    do not, by construction)."""
    from harness import __version__
    from harness.sampler import weights_with_decoder

    info = sampler.info
    logits = None
    if extractor.logits_weight is not None:
        logits = f"sha256:{results.file_digest(logits_path, 'sha256')}"
    return {"model": info.name, "weights": weights_with_decoder(info.weights, getattr(sampler, "decoder_weights", None)),
            "dtype": str(getattr(sampler, "dtype", "")), "num_samples": num_samples, "seed": seed,
            "guidance": guidance, "metrics": sorted(metrics), "mode": mode, "reference": _source_digest(reference),
            "network": extractor.network, "inception_score_weights": logits, "shard_size": shard_size,
            "save_samples": save_samples, "device_type": torch.device(device).type, "nfebench_version": __version__,
            **(settings or {})}


def evaluate_sampler(sampler, reference, *, num_samples: int, batch_size: int, seed: int,
                     guidance: float | None = None, metrics: tuple[str, ...] = DEFAULT_METRICS, mode: str = ADM,
                     device: str = "cpu", logits_path: str | None = None,
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
        sampler: a `harness.sampler.Sampler` (e.g. from `adapters.load_sampler`); outputs
            that are not torch tensors (JAX, numpy) are converted.
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

        values, skipped, ctx = evaluate_sampler(load_sampler("rf-b2"), open_source("ref.npz"),
                                                num_samples=1000, batch_size=50, seed=0,
                                                work_dir="runs/rf-b2-fid1k")
    """
    from tqdm.auto import tqdm

    if num_samples < MIN_SAMPLES:
        raise InputError(f"--num-samples must be at least {MIN_SAMPLES}, got {num_samples}")
    check_batch_size(batch_size)
    check_mode(mode)
    check_reference(reference, metrics, mode)
    world = world or World()
    shards = shard_ranges(num_samples, shard_size)
    extractor = run_checked(world, lambda: _extractor(device, logits_path, metrics))
    context = {"mode": mode, "network": extractor.network, "reference": str(getattr(reference, "path", reference)),
               "quantization": QUANTIZATION, "world_size": world.size, "shard_size": shard_size,
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
                    sampler, reference, extractor, num_samples=num_samples, seed=seed, guidance=guidance,
                    metrics=metrics, mode=mode, device=device, shard_size=shard_size,
                    save_samples=bool(save_samples), logits_path=logits_path, settings=settings))
            wd.open()
            finished = wd.result()
            return {"done": [] if finished else wd.done(shards), "finished": finished}

        state = run_on_root(world, open_work_dir)
        if state["finished"] is not None:  # a finished run: reported again, not redone
            stored = state["finished"]
            values = [MetricValue(**v) for v in stored["values"]] if world.is_root else []
            return values, stored["skipped"], {**stored["context"], "reused": True}
        todo = [s for s, done in enumerate(state["done"]) if not done]
        done_images = num_samples - sum(len(shards[s]) for s in todo)
        spatial, keep_images = "sfid" in metrics, bool(save_samples)
        bar = stack.enter_context(tqdm(total=num_samples, initial=done_images, desc=f"eval {sampler.info.name}",
                                       unit="img", disable=not world.is_root))
        for assignment in rounds(todo, world.size):
            mine = assignment[world.rank]

            def work():
                if mine is None:
                    return None
                return mine, _shard_features(sampler, extractor, shards[mine], batch_size=batch_size, seed=seed,
                                             guidance=guidance, mode=mode, spatial=spatial, keep_images=keep_images,
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
        values, skipped = run_on_root(world, lambda: _finish(
            wd, sampler, reference, extractor, context, num_samples=num_samples, num_shards=len(shards),
            metrics=metrics, mode=mode, batch_size=batch_size, save_samples=save_samples, keep=work_dir is not None))
    return (values, skipped, context) if world.is_root else ([], skipped, context)
