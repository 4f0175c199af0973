"""Standard image-generation metrics, offline: FID, sFID, IS, precision, recall, density,
coverage, KID and FD-DINOv2, with resampling intervals.

Modules: `features` (the interface of feature networks and their tables), `inception` (the
Inception network: find, verify, load, extract), `dinov2` (DINOv2 ViT-L/14 for FD-DINOv2,
from local weights), `preprocess` (uint8 and the ``adm`` / ``clean`` resize modes), `fid`
(streaming statistics, Frechet distance, statistics files), `inception_score`, `prdc`
(precision/recall, density/coverage), `kid`, `bootstrap` (intervals). The pipeline that feeds
them from a sampler or image files is `harness.evaluate`.
"""

from harness.metrics.bootstrap import frechet_replicates, half_sample_weights, interval
from harness.metrics.fid import RunningStats, frechet_distance, load_stats, save_stats
from harness.metrics.inception_score import InceptionScore, inception_score
from harness.metrics.kid import kid
from harness.metrics.prdc import manifold_metrics, precision_recall

__all__ = ["InceptionScore", "RunningStats", "frechet_distance", "frechet_replicates", "half_sample_weights",
           "inception_score", "interval", "kid", "load_stats", "manifold_metrics", "precision_recall", "save_stats"]
