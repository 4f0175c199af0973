"""Sample -> decode -> uint8 -> features -> metrics, and the same from image files.

Split at the seams of EDM2's ``calculate_metrics.py`` (stats of files, stats of an iterable,
metrics from stats), one module each, in the order they import one another:

- `config`: the metric names (`METRIC_CHOICES`, `parse_metrics`), `MetricOptions`, and
  `EvalConfig`, everything a sampled evaluation is asked to do (the work-dir manifest is
  written from it);
- `sources`: image folders, ``.npz`` images and statistics files (`open_source`);
- `stats`: the features and statistics of a set of images: what the metrics need (`Plan`),
  the networks (`open_extractors`), their accumulation (`collect`, `shard_stats`);
- `metrics`: the numbers from statistics and features, with 95% intervals
  (`compute_metrics`, `prepare_reference`), and two sets of files compared (`compare_sources`);
- `sampling`: uint8 samples from (seed, i) (`generate_images`), the ADM samples file
  (`SampleWriter`), and the sharded, distributed, resumable `evaluate_sampler`.

Every name is re-exported here, so ``from harness.evaluate import ...`` is all a caller needs.

Example::

    from adapters import load_sampler
    from harness.evaluate import EvalConfig, evaluate_sampler, open_source
    s = load_sampler("sit-b2", checkpoint="sit-b2.pt")
    values, skipped, ctx = evaluate_sampler(s, open_source("VIRTUAL_imagenet256_labeled.npz"),
                                            EvalConfig(num_samples=50_000, batch_size=64, seed=0))
    values[0].value, values[0].ci_low, values[0].ci_high
"""

from harness.evaluate.config import (
    DEFAULT_METRICS,
    FRECHET,
    INTERVALS,
    METRIC_CHOICES,
    MIN_SAMPLES,
    PAIRWISE,
    RELIABLE_SAMPLES,
    EvalConfig,
    MetricOptions,
    MetricWarning,
    check_batch_size,
    check_metric_names,
    parse_metrics,
)
from harness.evaluate.metrics import (
    MetricValue,
    Reference,
    check_count,
    check_reference,
    compare_sources,
    compute_metrics,
    prepare_reference,
)
from harness.evaluate.sampling import (
    SampleWriter,
    as_torch,
    evaluate_sampler,
    generate_images,
    run_manifest,
)
from harness.evaluate.sources import (
    IMAGE_EXTENSIONS,
    ImageFolder,
    NpzImages,
    open_source,
    source_digest,
)
from harness.evaluate.stats import (
    Collected,
    FeatureCollector,
    Plan,
    collect,
    make_plan,
    metric_features,
    open_extractors,
    shard_stats,
)

__all__ = [
    "DEFAULT_METRICS", "FRECHET", "INTERVALS", "METRIC_CHOICES", "MIN_SAMPLES", "PAIRWISE", "RELIABLE_SAMPLES",
    "EvalConfig", "MetricOptions", "MetricWarning", "check_batch_size", "check_metric_names", "parse_metrics",
    "MetricValue", "Reference", "check_count", "check_reference", "compare_sources", "compute_metrics",
    "prepare_reference",
    "SampleWriter", "as_torch", "evaluate_sampler", "generate_images", "run_manifest",
    "IMAGE_EXTENSIONS", "ImageFolder", "NpzImages", "open_source", "source_digest",
    "Collected", "FeatureCollector", "Plan", "collect", "make_plan", "metric_features", "open_extractors",
    "shard_stats",
]
