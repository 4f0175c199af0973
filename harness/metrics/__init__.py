"""Standard image-generation metrics, offline: FID, sFID, IS, precision and recall.

Modules: `inception` (the network: find, verify, load, extract), `preprocess` (uint8 and
the ``adm`` / ``clean`` resize modes), `fid` (streaming statistics, Frechet distance,
statistics files), `inception_score`, `prdc` (precision/recall). The pipeline that feeds
them from a sampler or image files is `harness.evaluate`.
"""

from harness.metrics.fid import RunningStats, frechet_distance, load_stats, save_stats
from harness.metrics.inception_score import InceptionScore, inception_score
from harness.metrics.prdc import precision_recall

__all__ = ["InceptionScore", "RunningStats", "frechet_distance", "inception_score", "load_stats",
           "precision_recall", "save_stats"]
