"""What an evaluation is asked to do: the metric names, their options (`MetricOptions`) and
the settings of a sampled evaluation (`EvalConfig`), each with its default and help in one place.

Metrics and the features they read (`harness.metrics.features`):

- ``fid``, ``sfid``, ``fd_dinov2``: Frechet distances of the Gaussians of Inception pool_3,
  Inception mixed_6/conv and DINOv2 ViT-L/14 features (`FRECHET`);
- ``is``: Inception Score, from pool_3 times the softmax weights;
- ``pr`` (precision, recall), ``dc`` (density, coverage), ``kid``: on the per-image pool_3
  features of both sets (`PAIRWISE`);
- 95% bootstrap intervals (`harness.metrics.bootstrap`) for ``fid``, ``fd_dinov2`` and ``kid``,
  over the per-image features of the samples (`INTERVALS`).

Example::

    config = EvalConfig(num_samples=50_000, batch_size=64, seed=0, metrics=parse_metrics("fid,kid"),
                        work_dir="runs/sit-b2-fid50k")
    config.check().manifest()["num_samples"]      # 50000
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from adapters.api.config import option
from adapters.api.errors import InputError
from harness import results
from harness.metrics.bootstrap import BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED
from harness.metrics.kid import KID_SEED, KID_SUBSET_SIZE, KID_SUBSETS
from harness.metrics.preprocess import ADM, check_mode
from harness.workdir import DEFAULT_SHARD_SIZE

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


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """``"fid,is"`` -> ("fid", "is"); unknown names are an InputError."""
    names = tuple(m.strip() for m in (text or ",".join(DEFAULT_METRICS)).split(",") if m.strip())
    check_metric_names(names)
    return tuple(dict.fromkeys(names))


def check_metric_names(names: tuple[str, ...]) -> None:
    unknown = [m for m in names if m not in METRIC_CHOICES]
    if unknown or not names:
        raise InputError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METRIC_CHOICES)}")


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer, got {batch_size}")


@dataclass(frozen=True)
class MetricOptions:
    """Settings of the metrics besides their names, with their defaults in one place.

    Example::

        MetricOptions(mode="clean", kid_subsets=50, bootstrap=0)   # no intervals
    """

    mode: str = option(ADM, "Inception preprocessing: adm or clean")
    kid_subsets: int = option(KID_SUBSETS, "KID subset pairs")
    kid_subset_size: int = option(KID_SUBSET_SIZE, "images per KID subset (capped at the smaller set)")
    bootstrap: int = option(BOOTSTRAP_REPLICATES, "replicates per 95% interval; 0: no intervals")
    inception_weights: str | None = option(None, "torch-fidelity's Inception file, for IS (default: looked up)")
    dinov2_weights: str | None = option(None, "dinov2_vitl14_pretrain.pth, for fd_dinov2 (default: looked up)")

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


def _required(help: str) -> Any:
    """A field every caller must give (an evaluation's N, batch size and seed are its choice)."""
    return dataclasses.field(metadata={"help": help})


@dataclass(frozen=True)
class EvalConfig:
    """Everything `harness.evaluate.evaluate_sampler` is asked to do, besides the sampler, the
    reference and the process's place in a distributed run.

    The work-dir manifest is written from it (`manifest`, with the sampler's and reference's
    parts added by `harness.evaluate.sampling.run_manifest`); its key names are those of
    nfebench-workdir-2, so a run started by an older nfebench resumes.

    Example::

        config = EvalConfig(num_samples=1000, batch_size=50, seed=0, metrics=("fid", "kid"))
        dataclasses.replace(config, work_dir="runs/sit-b2-fid1k")
    """

    num_samples: int = _required("N, the number of samples; FID is reported with it (50,000 for FID-50K)")
    batch_size: int = _required("images per generate/decode/network call (changes no number)")
    seed: int = _required("noise and label of sample i come from (seed, i) (`adapters.api.seeding`)")
    guidance: float | None = option(None, "classifier-free guidance scale passed to the sampler (None: its default)")
    metrics: tuple[str, ...] = option(DEFAULT_METRICS, "names from METRIC_CHOICES")
    options: MetricOptions = option(MetricOptions(), "mode, KID subsets, bootstrap replicates, weight files")
    device: str = option("cpu", "device of the feature networks (and of KID, precision/recall, the bootstrap)")
    save_samples: str | Path | None = option(None, "also write the uint8 samples as an ADM sample batch (.npz) here")
    work_dir: str | Path | None = option(None, "keep shards, manifest and result here (`harness.workdir`): a rerun "
                                               "resumes; None: a temporary folder")
    shard_size: int = option(DEFAULT_SHARD_SIZE, "samples per shard (part of the result: the merge follows shards)")
    settings: Mapping[str, Any] | None = option(None, "further settings that change the samples, for the manifest "
                                                      "(e.g. the config overrides the sampler was built with)")
    progress: bool = option(True, "show a progress bar (on rank 0 only)")

    def check(self) -> "EvalConfig":
        """The checks that need no network: bad input fails before any work. Returns self."""
        if self.num_samples < MIN_SAMPLES:
            raise InputError(f"--num-samples must be at least {MIN_SAMPLES}, got {self.num_samples}")
        check_batch_size(self.batch_size)
        check_metric_names(tuple(self.metrics))
        self.options.check()
        if self.shard_size < 1:
            raise InputError(f"--shard-size must be a positive integer, got {self.shard_size}")
        if self.save_samples and Path(self.save_samples).suffix != ".npz":
            raise InputError(f"--save-samples {self.save_samples}: the file name must end in .npz")
        return self

    def manifest(self) -> dict:
        """This config's part of the work-dir manifest: every setting that changes the shards
        or the result (batch size and progress do not; the metrics enter as those computed)."""
        return {"num_samples": self.num_samples, "seed": self.seed, "guidance": self.guidance,
                "mode": self.options.mode, "metric_options": self.options.settings(), "shard_size": self.shard_size,
                "save_samples": bool(self.save_samples), "device_type": torch.device(self.device).type,
                **(self.settings or {})}
