"""A sweep's grid: ``--grid`` axes and ``--options`` settings expanded into each model's settings.

Syntax (each flag repeatable; values are `harness.settings` literals, ``/`` writes a tuple):

- ``--grid MODEL:AXIS=V1,V2,...`` one axis of one model; ``--grid AXIS=V1,V2,...`` the axis of
  every model that has it. A model's settings are the cartesian product of its axes, in the
  order the axes were given (the first varies slowest), then its ``--options`` settings, each
  one setting as given (`harness.settings.parse_option_sets`). A model with neither runs once,
  at its defaults.
- An axis is one of the model's `generate` options (the keyword arguments of its family's
  ``_generate``, `harness.timing.plan.family_options`) or ``guidance`` where its config has
  that field (`harness.timing.plan.setting_axes`). Values are checked against the option's
  declared type (``num_steps=2.5`` is refused), ints become floats for a float option
  (``guidance=1`` is ``guidance=1.0``), and each option equal to its default in the family's
  signature is dropped (`harness.settings.canonical_options`), so two spellings of one setting
  are one setting (TARFlow's ``decoding=sequential`` is its default setting).

Bad input is an `InputError` before any work: an axis no model (or not the model named) has,
naming the valid ones; an axis without values (``num_steps=``) or with an empty value; an
axis given twice for one model; a setting given twice, named with where it came from.

Example::

    >>> axes = [parse_axis("rf-mini:num_steps=1,2", ("rf-mini", "biflow-mini")),
    ...         parse_axis("guidance=0,1", ("rf-mini", "biflow-mini"))]
    >>> grid = expand_grid(("rf-mini", "biflow-mini"), axes, {}, samplers)   # meta samplers
    >>> [s.label for s in grid["rf-mini"]]
    ['rf-mini[guidance=0.0,num_steps=1]', 'rf-mini[guidance=1.0,num_steps=1]', ...]
"""

from __future__ import annotations

import itertools
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from adapters.api.config import TUPLE_SEP, check_value, parse_literal
from adapters.api.errors import InputError
from harness.settings import (
    _split_model,  # "MODEL:rest", as --set and --options are written
    canonical_options,
    json_options,
    label,
    options_text,
    parse_pairs,
)
from harness.timing.plan import setting_axes

GRID, OPTIONS, DEFAULTS = "--grid", "--options", "the defaults"  # where a setting came from


@dataclass(frozen=True)
class Axis:
    """One ``--grid`` axis: its model (None: every model that has it), option name and values."""

    model: str | None
    name: str
    values: tuple[Any, ...]
    text: str  # as given, for messages


@dataclass(frozen=True)
class GridSetting:
    """One setting of a sweep: a model and the options its samples are made with, guidance
    included when the setting sets it."""

    model: str
    options: Mapping[str, Any]
    source: str = field(default=DEFAULTS, compare=False)  # GRID, OPTIONS or DEFAULTS: not part of the setting

    @property
    def label(self) -> str:
        """Its name in tables (`harness.settings.label`): ``rf-mini[num_steps=4]``."""
        return label(self.model, self.options)

    @property
    def guidance(self) -> float | None:
        return self.options.get("guidance")

    @property
    def generate_options(self) -> dict[str, Any]:
        """The options passed to ``generate`` besides guidance."""
        return {k: v for k, v in self.options.items() if k != "guidance"}

    def json(self) -> dict[str, Any]:
        """What its rows keep in ``config.options`` (`harness.settings.json_options`)."""
        return json_options(self.options)


def _literal(raw: str) -> Any:
    parts = raw.split(TUPLE_SEP) if TUPLE_SEP in raw else None
    return tuple(parse_literal(p) for p in parts) if parts else parse_literal(raw)


def parse_axis(text: str, models: Sequence[str]) -> Axis:
    """One ``--grid`` value: ``[MODEL:]AXIS=V1,V2,...`` (see the module text).

    Example::

        >>> parse_axis("rf-mini:num_steps=1,2,4", ("rf-mini",))
        Axis(model='rf-mini', name='num_steps', values=(1, 2, 4), text='rf-mini:num_steps=1,2,4')
    """
    model, rest = _split_model(text, GRID, models)
    name, sep, raw = rest.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InputError(f"--grid {text!r} is not [MODEL:]AXIS=V1,V2,..., e.g. --grid num_steps=1,2,4")
    items = [v.strip() for v in raw.split(",")]
    if not any(items):
        raise InputError(f"--grid {text!r}: the axis {name} has no values; give them comma-separated, "
                         f"e.g. --grid {name}=1,2")
    if not all(items):
        raise InputError(f"--grid {text!r}: the axis {name} has an empty value; write its values as V1,V2,...")
    return Axis(model, name, tuple(_literal(v) for v in items), text)


def option_types(sampler: Any) -> dict[str, Any]:
    """Declared types of the sampler's options (its family's ``_generate``, else ``generate``),
    ``guidance`` a float where the signature leaves it undeclared; {} where the hints cannot be read."""
    try:
        hints = typing.get_type_hints(getattr(sampler, "_generate", sampler.generate))
    except Exception:  # a third party's sampler with unresolvable annotations: values stay as parsed
        hints = {}
    hints.setdefault("guidance", float)
    return hints


def _typed(model: str, options: Mapping[str, Any], types: Mapping[str, Any]) -> dict[str, Any]:
    return {k: check_value(model, k, types[k], v) if k in types else v for k, v in options.items()}


class _Settings:
    """One model's settings as they are added, refusing a second copy of one."""

    def __init__(self, model: str, sampler: Any, axes: tuple[str, ...]):
        self.model, self.sampler, self.axes = model, sampler, axes
        self.types = option_types(sampler)
        self.by_label: dict[str, tuple[GridSetting, str]] = {}

    def add(self, options: Mapping[str, Any], source: str, given: str) -> None:
        unknown = sorted(set(options) - set(self.axes))
        if unknown:
            raise InputError(f"{given}: {self.model} has no option(s) {', '.join(unknown)}; its axes: "
                             f"{', '.join(self.axes) or 'none'}")
        setting = GridSetting(self.model, canonical_options(self.sampler, _typed(self.model, options, self.types)),
                              source)
        if setting.label in self.by_label:
            _, first = self.by_label[setting.label]
            where = f"by {first}" if first == given else f"by {first} and by {given}"
            raise InputError(f"the setting {setting.label} is given twice ({where}; options at their defaults are "
                             f"dropped); each setting runs once")
        self.by_label[setting.label] = (setting, given)

    def settings(self) -> list[GridSetting]:
        return [s for s, _ in self.by_label.values()]


def expand_grid(models: Sequence[str], axes: Iterable[Axis], option_sets: Mapping[str, Sequence[Mapping[str, Any]]],
                samplers: Mapping[str, Any]) -> dict[str, list[GridSetting]]:
    """Each model's settings, in order (see the module text).

    Args:
        models: the model ids.
        axes: the parsed ``--grid`` values (`parse_axis`).
        option_sets: model id -> its ``--options`` settings (`harness.settings.parse_option_sets`).
        samplers: model id -> its sampler (the meta device will do): its options and defaults.

    Returns:
        model id -> its `GridSetting` list; the first is its baseline unless one is named.
    """
    axes = list(axes)
    valid = {m: setting_axes(m, samplers[m]) for m in models}
    for a in axes:
        if a.model is not None and a.name not in valid[a.model]:
            raise InputError(f"--grid {a.text!r}: {a.model} has no axis {a.name}; its axes: "
                             f"{', '.join(valid[a.model]) or 'none'}")
        if a.model is None and not any(a.name in valid[m] for m in models):
            known = "; ".join(f"{m}: {', '.join(valid[m]) or 'none'}" for m in models)
            raise InputError(f"--grid {a.text!r}: no model of --models has the axis {a.name} ({known})")
    out = {}
    for m in models:
        mine = [a for a in axes if a.model == m or (a.model is None and a.name in valid[m])]
        for a, b in itertools.combinations(mine, 2):
            if a.name == b.name:
                raise InputError(f"--grid: {m}'s axis {a.name} is given twice ({a.text!r} and {b.text!r})")
        found = _Settings(m, samplers[m], valid[m])
        if mine:
            given = " ".join(f"{GRID} {a.text}" for a in mine)
            for combo in itertools.product(*(a.values for a in mine)):
                found.add(dict(zip((a.name for a in mine), combo)), GRID, given)
        for options in option_sets.get(m, ()):
            found.add(options, OPTIONS, f"{OPTIONS} {options_text(options)}")
        if not found.by_label:
            found.add({}, DEFAULTS, DEFAULTS)
        out[m] = found.settings()
    return out


def parse_baselines(values: Iterable[str] | None, grid: Mapping[str, Sequence[GridSetting]],
                    samplers: Mapping[str, Any]) -> tuple[dict[str, GridSetting], set[str]]:
    """``--baseline [MODEL:]key=value,...`` values -> (model id -> the setting its others are timed
    against, the models a value named); it must be one of the model's settings
    (``MODEL:defaults`` names its defaults). A model no value names has its first setting."""
    models = tuple(grid)
    out = {m: grid[m][0] for m in models}
    named: set[str] = set()
    for value in values or ():
        model, text = _split_model(value, "--baseline", models)
        if model is None:
            if len(models) != 1:
                raise InputError(f"--baseline {value!r}: with several models name one: --baseline MODEL:key=value")
            model = models[0]
        if model in named:
            raise InputError(f"--baseline: {model} is given two baselines")
        named.add(model)
        options = {} if text.strip() == "defaults" else parse_pairs(text, "--baseline", tuples=True)
        wanted = label(model, canonical_options(samplers[model], _typed(model, options, option_types(samplers[model]))))
        match = [s for s in grid[model] if s.label == wanted]
        if not match:
            raise InputError(f"--baseline {value!r}: {wanted} is not among {model}'s settings "
                             f"({', '.join(s.label for s in grid[model])})")
        out[model] = match[0]
    return out, named


def stored_setting(model: str, options: Mapping[str, Any]) -> GridSetting:
    """A setting as a work dir keeps it (`json_options`: tuples as lists) made whole again."""
    return GridSetting(model, {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
