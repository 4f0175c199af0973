"""A sweep's quality pass of one setting: `harness.evaluate.evaluate_sampler` (the path of
``nfebench eval``) on the setting's sampler, resumable shard by shard in the setting's entry,
and its rows: those ``nfebench eval`` writes, plus the pass's two costs.

Every setting is sampled from the same seed, N and per-index noise and labels (sample i from
(seed, i), `adapters.api.seeding`), so two settings' numbers differ by the settings alone.

The costs (`MeasuredSampler`): ``sample_images_per_s`` is the images of the pass over the wall
time of its ``generate`` and ``decode`` calls (synchronised on CUDA); ``feature_images_per_s``
the images of each batch over the wall time from the end of its decode to the next batch's
``generate``, the time the feature networks (and the pass's light bookkeeping: uint8
conversion, shard writes) take it. The last batch of a process has no next call, so its
features go unmeasured; a pass of one batch has no feature row. Both add up over the processes
of a resumed pass (`harness.sweep.workdir.Throughput`, saved after every batch).

Example::

    sampler = MeasuredSampler(load_sampler("rf-mini"), setting, entry, device="cpu", bar=bar)
    values, skipped, ctx = evaluate_sampler(sampler, reference, config, work_dir=entry.eval_dir)
    rows = quality_rows(values, ctx, ...) + cost_rows(entry.throughput(), ...)
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import torch

from adapters.api.sampler import weights_with_decoder
from harness.evaluate import EvalConfig, MetricValue
from harness.quality import Bound
from harness.results import FEATURE_IMAGES_PER_S, KID, SAMPLE_IMAGES_PER_S
from harness.sweep.grid import GridSetting
from harness.sweep.workdir import SettingEntry, Throughput


class MeasuredSampler(Bound):
    """A setting's sampler as `evaluate_sampler` calls it: its options fixed (`Bound`), its
    calls timed (see the module text) and the sweep's progress bar moved by each batch.

    Args:
        sampler: the model's sampler.
        setting: the setting (its options besides guidance go to every ``generate``).
        entry: where the pass's costs are kept (`SettingEntry.throughput`).
        device: the sampler's device; CUDA is synchronised before each clock reading.
        bar: a tqdm bar to move by each batch's images, or None.
    """

    def __init__(self, sampler: Any, setting: GridSetting, entry: SettingEntry, *, device: torch.device,
                 bar: Any = None):
        super().__init__(sampler, setting.generate_options)
        self.entry, self.bar, self.cuda = entry, bar, torch.device(device).type == "cuda"
        self.costs = entry.throughput()
        self._started: float | None = None  # the current batch's generate call
        self._last: tuple[float, int] | None = None  # (end of the previous batch's decode, its images)

    @property
    def dtype(self):
        return getattr(self.sampler, "dtype", "")

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def generate(self, noise, labels, *, guidance=None):
        self._started = self._now()
        if self._last is not None:
            end, n = self._last
            self.costs.feature_images += n
            self.costs.feature_seconds += self._started - end
        return super().generate(noise, labels, guidance=guidance)

    def decode(self, x):
        images = super().decode(x)
        end, n = self._now(), int(images.shape[0])
        self.costs.sample_images += n
        self.costs.sample_seconds += end - self._started
        self._last = (end, n)
        self.entry.write_throughput(self.costs)
        if self.bar is not None:
            self.bar.update(n)
        return images


def quality_rows(values: list[MetricValue], ctx: Mapping[str, Any], *, setting: GridSetting, info: Any, weights: str,
                 nfe: int, overrides: Mapping[str, Any], config: EvalConfig, device: str, device_name: str,
                 dtype: str) -> list[dict[str, Any]]:
    """The rows ``nfebench eval`` writes for these values (one per metric), with the setting's
    options in ``config.options`` and its guidance in ``guidance``."""
    row_config = {"reference": ctx["reference"], "reference_n": ctx["reference_n"], "mode": ctx["mode"],
                  "network": ctx["network"], "quantization": ctx["quantization"], **overrides,
                  "options": setting.json()}
    rows = []
    for v in values:
        notes = (f"{v.metric} of N={v.n} samples vs {ctx['reference']} ({ctx['mode']} mode, {v.network}); "
                 f"{ctx['world_size']} process(es), shards of {ctx['shard_size']}")
        c = {**row_config, "network": ctx["extractor_networks"].get(v.extractor, ctx["network"])}
        if v.metric == KID:
            c.update(kid_subsets=config.options.kid_subsets, kid_subset_size=config.options.kid_subset_size)
        rows.append(dict(_columns(setting, info, weights, nfe, config, device, device_name, dtype),
                         metric=v.metric, value=v.value, spread=v.spread, n=v.n, ci_low=v.ci_low, ci_high=v.ci_high,
                         notes=f"{notes}; {v.notes}" if v.notes else notes, config=c))
    return rows


def cost_rows(costs: Throughput, *, setting: GridSetting, info: Any, weights: str, nfe: int, config: EvalConfig,
              device: str, device_name: str, dtype: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The pass's ``sample_images_per_s`` and ``feature_images_per_s`` rows, and a message for
    each that could not be measured (see the module text)."""
    rows, missing = [], []
    measured = ((SAMPLE_IMAGES_PER_S, costs.sample_images, costs.sample_seconds,
                 f"images per second of generate + decode (batches of {config.batch_size}) during the quality pass"),
                (FEATURE_IMAGES_PER_S, costs.feature_images, costs.feature_seconds,
                 f"images per second from a batch's decode to the next batch's generate during the quality pass: "
                 f"the feature networks ({', '.join(config.metrics)}) and the pass's bookkeeping"))
    for metric, images, seconds, what in measured:
        if images == 0 or seconds <= 0:
            missing.append(f"{setting.label}: no {metric} row: the quality pass had no batch to measure it on "
                           f"(one batch per process leaves its features untimed)")
            continue
        rows.append(dict(_columns(setting, info, weights, nfe, config, device, device_name, dtype),
                         metric=metric, value=images / seconds, n=images,
                         notes=f"{what}; {images} images in {seconds:.3f} s",
                         config={"options": setting.json(), "images": images, "seconds": seconds}))
    return rows, missing


def _columns(setting: GridSetting, info: Any, weights: str, nfe: int, config: EvalConfig, device: str,
             device_name: str, dtype: str) -> dict[str, Any]:
    """The setting columns of a quality-pass row, as ``nfebench eval`` fills them."""
    return dict(model=info.name, family=info.family, params=info.params, nfe=nfe, backend="torch", device=device,
                device_name=device_name, dtype=dtype, compiled=False, batch_size=config.batch_size, decode="on",
                guidance=setting.guidance, seed=config.seed, weights=weights)


def pass_weights(sampler: Any) -> str:
    """The weights column of a pass's rows: the generator's, with its decoder's when it has one."""
    return weights_with_decoder(sampler.info.weights, getattr(sampler, "decoder_weights", None))
