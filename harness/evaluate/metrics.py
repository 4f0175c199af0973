"""Metrics from features and statistics: the reference side (`prepare_reference`), the
numbers with their 95% intervals (`compute_metrics`), and two sets of files compared
(`compare_sources`, as ``nfebench fid``).

Example::

    values, skipped, ctx = compare_sources(open_source("samples.npz"), open_source("ref.npz"),
                                           metrics=("fid", "kid"))
    values[0].value, values[0].ci_low, values[0].ci_high
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from adapters.api.errors import InputError
from harness import results
from harness.evaluate.config import (
    DEFAULT_METRICS,
    FRECHET,
    INTERVALS,
    MIN_SAMPLES,
    PAIRWISE,
    RELIABLE_SAMPLES,
    MetricOptions,
    MetricWarning,
)
from harness.evaluate.sources import NpzImages
from harness.evaluate.stats import Collected, Plan, collect, make_plan, open_extractors
from harness.metrics.bootstrap import (
    BOOTSTRAP_SEED,
    frechet_replicates,
    half_sample_weights,
    interval,
)
from harness.metrics.features import FeatureExtractor, extractor_of
from harness.metrics.fid import (
    ReferenceStats,
    frechet_distance,
    nonnegative,
    stat_names,
)
from harness.metrics.kid import KID_SEED, kid
from harness.metrics.prdc import ADM_K, manifold_metrics
from harness.metrics.preprocess import ADM


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


def check_networks(source: ReferenceStats, networks: dict[str, str], features, other: str) -> None:
    """Refuse statistics whose `features` were computed with another network than `networks`
    (feature -> the network description `other`, the other side, used): a distance between features
    of two networks is no FID at all, so it is an InputError, never a warning beside a number."""
    for f in sorted(features):
        recorded, ours = source.networks.get(f), networks.get(f)
        if recorded and ours and recorded != ours:
            raise InputError(f"{source.path}: its {f} features were computed with {recorded}, {other} with "
                             f"{ours}; numbers of different networks do not compare. Recompute the "
                             f"statistics with `nfebench ref-stats` on the same weights, or pass the weights they "
                             f"were made with")


def _extractor_networks(extractors: dict[str, FeatureExtractor], features) -> dict[str, str]:
    """feature -> the network description an extractor records in statistics files for it."""
    return {f: extractors[extractor_of(f)].network for f in features if extractor_of(f) in extractors}


def prepare_reference(source, extractors: dict[str, FeatureExtractor], plan: Plan, mode: str,
                      batch_size: int) -> Reference:
    """Statistics from a file, or computed from images. What a statistics file lacks and its
    images (an ADM batch's arr_0) can give is computed from them: pool_3 features for
    precision/recall or KID, DINOv2 statistics for FD-DINOv2."""
    name = str(getattr(source, "path", source))
    check_reference(source, plan, mode, extractors)
    if isinstance(source, ReferenceStats):
        gaussians = {f: source.gaussians[f] for f in plan.stats if f in source.gaussians}
        features = {f: source.features[f] for f in plan.reference_keep if f in source.features}
        from_file = frozenset(gaussians) | frozenset(features)
        if source.kind == "adm" and mode != ADM and any(extractor_of(f) == "inception" for f in from_file):
            warnings.warn(f"{source.path} is an ADM reference batch (TF bilinear resize); comparing it with "
                          f"{mode!r} features mixes preprocessing modes", MetricWarning, stacklevel=2)
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


def check_reference(source, plan: Plan, mode: str, extractors: dict[str, FeatureExtractor] | None = None) -> None:
    """The checks `prepare_reference` makes before any work: cheap, so a bad reference is
    refused before hours of sampling, not after (with `extractors`, also a reference whose
    statistics come from another network, `check_networks`)."""
    if not isinstance(source, ReferenceStats):
        return
    if extractors:
        used = (plan.stats & frozenset(source.gaussians)) | (plan.reference_keep & frozenset(source.features))
        check_networks(source, _extractor_networks(extractors, used), used, "the samples' (the network loaded here)")
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
        if isinstance(b, ReferenceStats):  # two files: each must name the same network as the other
            check_networks(b, a.networks, frechet, f"{a.path}'s")
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

