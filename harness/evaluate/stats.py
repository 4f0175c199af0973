"""Features and statistics of a set of images: what the metrics need (`Plan`), the networks
that give it (`open_extractors`), and its accumulation over batches (`FeatureCollector`,
`collect`) or over a whole shard at once (`shard_stats`).

Features update float64 running statistics (`harness.metrics.fid.RunningStats`), the
Inception Score accumulator and, only where a metric needs them, lists of per-image features.

Example::

    extractors, plan, skipped = open_extractors(("fid", "kid"), MetricOptions(), "cpu")
    samples = collect(open_source("samples.npz"), extractors, plan.stats, plan.keep, batch_size=64)
    samples.stats["pool"].mean.shape               # (2048,)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from adapters.api.errors import InputError
from harness.evaluate.config import (
    FRECHET,
    INTERVALS,
    PAIRWISE,
    MetricOptions,
    MetricWarning,
    check_batch_size,
)
from harness.evaluate.sources import ImageFolder, NpzImages
from harness.metrics.features import (
    FEATURES,
    FeatureExtractor,
    Unavailable,
    extract_all,
    extractor_class,
    extractor_of,
)
from harness.metrics.fid import RunningStats
from harness.metrics.inception_score import InceptionScore
from harness.metrics.preprocess import as_nchw_uint8


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

