"""The sweep's grid: every model checked on the meta device with its settings
(`inspect_models`), the models in build groups (`groups`), and the timed points in run
order (`plan`).

A point is one (model, compile mode, batch size, part, setting). Its part, as the rows'
``decode`` column: ``off`` the generator alone, ``on`` generator and decode in one call,
``only`` the decoder alone. The decoder-alone points are planned once per decoder (the
family spec's `DecoderInfo`, ``get_spec(id).decoder``), latent shape, batch size and
compile mode, with the first model that decodes with it: the same network on the same
latents costs the same whatever generator made them.

Example::

    infos, settings = inspect_models(config)
    for point in plan(config, infos):
        print(point.model, point.batch_size, point.part)
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from adapters import get_spec, load_sampler
from adapters.api.errors import InputError
from adapters.api.sampler import DecoderInfo, ModelInfo, Sampler
from harness.pairs import pairs_among
from harness.quality import is_exact, reference_options
from harness.settings import label, nfe_of, options_text, setting_options
from harness.timing.config import SweepConfig

GENERATOR, END_TO_END, DECODER = "off", "on", "only"  # a point's part, as its `decode` column


@dataclass(frozen=True)
class Point:
    """One timed measurement of the grid."""

    model: str
    compiled: bool
    batch_size: int
    part: str  # GENERATOR, END_TO_END or DECODER
    variant: int = 0  # which of the model's option settings (`SweepConfig.settings_of`)


@dataclass(frozen=True)
class Setting:
    """One option setting of a model, checked before anything is timed (`inspect_models`)."""

    model: str
    options: Mapping[str, Any]
    label: str  # `harness.settings.label`: the model id, with its options if any
    nfe: int  # of what runs: the sweep's guidance and these options (`harness.settings.nfe_of`)
    reference_options: Mapping[str, Any]  # its reference setting's (`harness.quality.reference_options`)
    exact: bool  # decodes as its reference does (`harness.quality.is_exact`): TARFlow's sequential decoding


def decoder_of(model: str, info: ModelInfo) -> DecoderInfo | None:
    """The decoder `model` decodes with, as its family's spec describes it; None in pixel space
    (a family may be configured into either space, e.g. rf-mini with ``space="latent"``)."""
    return get_spec(model).decoder if info.space == "latent" else None


def family_options(sampler: Sampler) -> tuple[str, ...]:
    """The options `sampler.generate` accepts: its ``family_options`` (TorchSampler, JaxSampler),
    else the keyword arguments of ``generate`` besides guidance."""
    found = getattr(sampler, "family_options", None)
    if found is not None:
        return tuple(found)
    params = inspect.signature(sampler.generate).parameters.values()
    return tuple(p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name != "guidance")


def setting_axes(model: str, sampler: Sampler) -> tuple[str, ...]:
    """What one setting of `model` may set: its family options (`family_options`), and
    ``guidance`` where its config has that field (`nfebench sweep`'s grids set it per setting).

    Example::

        >>> setting_axes("biflow-mini", load_sampler("biflow-mini", device="meta"))
        ('guidance',)
    """
    fields = {f.name for f in dataclasses.fields(get_spec(model).config)}
    return family_options(sampler) + (("guidance",) if "guidance" in fields else ())


def inspect_models(config: SweepConfig) -> tuple[dict[str, ModelInfo], dict[tuple[str, int], Setting]]:
    """Every model built on the meta device with its checkpoint and overrides, and its settings checked.

    A checkpoint that does not fit the model (as `--set` configures it) fails here, naming its
    tensors; so do options the family lacks (named with the ones it has) and bad option values
    the family can check without sampling (a sampler's ``check_options``, e.g. TARFlow's
    ``jacobi_tol`` < 0): all before a run file exists. A setting whose options are all at their
    defaults is the default setting (`harness.settings.setting_options`).

    Returns:
        (model id -> its ModelInfo, weights included; (model id, variant) -> `Setting`).
    """
    infos: dict[str, ModelInfo] = {}
    settings: dict[tuple[str, int], Setting] = {}
    for model in config.models:
        overrides = dict(config.overrides.get(model, {}))
        sampler = load_sampler(model, checkpoint=config.checkpoints.get(model), device="meta", **overrides)
        infos[model] = sampler.info
        valid = setting_axes(model, sampler) if config.setting_guidance else family_options(sampler)
        seen: dict[str, int] = {}
        for variant, given in enumerate(config.settings_of(model)):
            options = setting_options(sampler, given)
            if label(model, options) in seen:
                raise InputError(f"--options: {options_text(given) or 'the defaults'} of {model} is the same setting "
                                 f"as another one given ({label(model, options)}: options at their defaults are "
                                 f"dropped)")
            seen[label(model, options)] = variant
            unknown = sorted(set(options) - set(valid))
            if unknown:
                hint = (f"; to give options to one model only, write --options {model}:key=value,..."
                        if len(config.models) > 1 else "")
                raise InputError(f"{model} (family {sampler.info.family}) has no option(s) {', '.join(unknown)}; "
                                 f"it accepts: {', '.join(valid) or 'none'}{hint}")
            check = getattr(sampler, "check_options", None)
            if check is not None:
                check(**{k: v for k, v in options.items() if k != "guidance"})
            settings[(model, variant)] = Setting(
                model, dict(options), label(model, options),
                nfe_of(model, guidance=config.guidance, options=options, **overrides),
                reference_options(sampler, options), is_exact(sampler, options))
        del sampler
    return infos, settings


def groups(models: tuple[str, ...]) -> list[tuple[str, ...]]:
    """`models` in build groups: the models of each pair (`harness.pairs`) together (linked
    pairs chain into one group), every other model alone; in the order of first appearance."""
    group_of = {m: (m,) for m in models}
    for fast, teacher in pairs_among(models):
        merged = tuple(m for m in models if m in group_of[fast] + group_of[teacher])
        for m in merged:
            group_of[m] = merged
    return list(dict.fromkeys(group_of[m] for m in models))


def plan(config: SweepConfig, infos: dict[str, ModelInfo]) -> list[Point]:
    """The sweep's points in run order: per compile mode, per build group (`groups`), per batch
    size: the group's generators, then end to end, then the decoder alone for each decoder (and
    latent shape) no earlier model timed. Consecutive points of one group, batch size and part
    are timed together.

    Example::

        >>> [(p.model, p.part) for p in plan(SweepConfig(models=("sit-b2",), decode="on"), infos)]
        [('sit-b2', 'on'), ('sit-b2', 'only')]
    """
    modes = {"none": (False,), "torch": (True,), "both": (False, True)}[config.compile]
    parts = {"off": (GENERATOR,), "on": (END_TO_END,), "both": (GENERATOR, END_TO_END)}[config.decode]
    decoding_at = set(config.decode_batch_sizes or config.batch_sizes)
    decoders = {m: decoder_of(m, infos[m]) for m in config.models}
    points, decoder_done = [], set()
    for compiled in modes:
        for group in groups(config.models):
            for bs in config.batch_sizes:
                for part in parts:
                    if part == END_TO_END and bs not in decoding_at:
                        continue
                    points += [Point(m, compiled, bs, part, v) for m in group
                               for v in range(len(config.settings_of(m)))]
                if END_TO_END not in parts or bs not in decoding_at:
                    continue
                for m in group:
                    decoder, info = decoders[m], infos[m]
                    if decoder is None:
                        continue
                    key = (compiled, bs, decoder.name, info.sample_shape, info.image_size)
                    if key not in decoder_done:
                        decoder_done.add(key)
                        points.append(Point(m, compiled, bs, DECODER))
    return points
