"""A setting beyond the model id: its checkpoint, config overrides and sampler options, as
`nfebench bench` takes them, and the NFE of what actually runs.

Command-line syntax (each flag repeatable):

- ``--checkpoint PATH`` when one model is benchmarked; ``--checkpoint MODEL=PATH`` for each
  model that has one (the others keep random weights).
- ``--set key=value,...`` config overrides of every model (as `nfebench eval --set`);
  ``--set MODEL:key=value,...`` of that model only.
- ``--options key=value,...`` one setting of the options passed to ``generate`` (e.g.
  ``decoding=jacobi,jacobi_tol=1e-3``), timed as a point of its own; ``--options
  MODEL:key=value,...`` a setting of that model only. A model that no ``--options`` names
  runs once, with its defaults.

Values are literals: integers, floats (``1e-3``), ``true``/``false``, ``none``, anything else
a string. Commas separate keys, so a per-block tuple is written with ``/``:
``gs_segments=1/1/1/8`` is ``(1, 1, 1, 8)`` (block 0 first).

Example::

    >>> parse_option_sets(["decoding=sequential", "tarflow-mini:decoding=jacobi,jacobi_tol=1e-3"],
    ...                   ("tarflow-mini",))
    {'tarflow-mini': ({'decoding': 'sequential'}, {'decoding': 'jacobi', 'jacobi_tol': 0.001})}
    >>> options_text({"decoding": "gs-jacobi", "gs_segments": (1, 1, 8, 1)})
    'decoding=gs-jacobi,gs_segments=1/1/8/1'
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

from adapters.api.config import TUPLE_SEP, parse_literal  # noqa: F401  (re-exported)
from adapters.api.errors import InputError



def parse_pairs(text: str, flag: str, *, tuples: bool = False) -> dict[str, Any]:
    """``"a=1,b=x"`` -> {"a": 1, "b": "x"}; with `tuples`, ``"c=1/2"`` -> {"c": (1, 2)}.
    An empty text, an item without ``=`` or a key given twice is an InputError naming `flag`."""
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise InputError(f"{flag} needs key=value pairs, e.g. {flag} decoding=jacobi,jacobi_tol=1e-3")
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise InputError(f"{flag} {text!r}: {item!r} is not key=value (give each key a value)")
        if key in out:
            raise InputError(f"{flag} {text!r}: {key} is given twice")
        parts = raw.split(TUPLE_SEP) if tuples and TUPLE_SEP in raw else None
        out[key] = tuple(parse_literal(p) for p in parts) if parts else parse_literal(raw)
    return out


def _split_model(text: str, flag: str, models: Sequence[str]) -> tuple[str | None, str]:
    """``"MODEL:rest"`` -> (MODEL, rest) when a ``:`` comes before the first ``=``, else (None, text)."""
    head, sep, rest = text.partition(":")
    if not sep or "=" in head:
        return None, text
    model = head.strip()
    if model not in models:
        raise InputError(f"{flag} {text!r} names {model!r}, which is not among the models benchmarked "
                         f"({', '.join(models)})")
    return model, rest


def parse_checkpoints(values: Iterable[str] | None, models: Sequence[str]) -> dict[str, str]:
    """``--checkpoint`` values -> model id -> path (see the module text)."""
    out: dict[str, str] = {}
    for value in values or ():
        model, sep, path = value.partition("=")
        if not sep:
            if len(models) != 1:
                raise InputError(f"--checkpoint {value}: with several models ({', '.join(models)}) name the model: "
                                 f"--checkpoint MODEL=PATH")
            model, path = models[0], value
        model, path = model.strip(), path.strip()
        if model not in models:
            raise InputError(f"--checkpoint {value}: {model!r} is not among the models benchmarked "
                             f"({', '.join(models)})")
        if not path:
            raise InputError(f"--checkpoint {value}: no path given")
        if model in out:
            raise InputError(f"--checkpoint: {model} is given two checkpoints")
        out[model] = path
    return out


def parse_overrides(values: Iterable[str] | None, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--set`` values -> model id -> config overrides (unprefixed ones apply to every model)."""
    out: dict[str, dict[str, Any]] = {}
    for value in values or ():
        model, text = _split_model(value, "--set", models)
        pairs = parse_pairs(text, "--set")
        for m in models if model is None else (model,):
            clash = sorted(set(pairs) & set(out.get(m, {})))
            if clash:
                raise InputError(f"--set: {m}'s {', '.join(clash)} is set twice")
            out.setdefault(m, {}).update(pairs)
    return out


def parse_option_sets(values: Iterable[str] | None, models: Sequence[str]) -> dict[str, tuple[dict[str, Any], ...]]:
    """``--options`` values -> model id -> its settings, in the order given (see the module text).
    Models no value names are left out (they run their defaults)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for value in values or ():
        model, text = _split_model(value, "--options", models)
        options = parse_pairs(text, "--options", tuples=True)
        for m in models if model is None else (model,):
            if options in out.get(m, []):
                raise InputError(f"--options: {m} is given the setting {options_text(options)} twice")
            out.setdefault(m, []).append(options)
    return {m: tuple(sets) for m, sets in out.items()}


def _value_text(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return TUPLE_SEP.join(_value_text(x) for x in v)
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    return repr(v) if isinstance(v, float) else str(v)


def options_text(options: Mapping[str, Any]) -> str:
    """Options as the text they are written in, keys sorted: ``decoding=jacobi,jacobi_tol=0.001``; "" for none."""
    return ",".join(f"{k}={_value_text(options[k])}" for k in sorted(options))


def label(model: str, options: Mapping[str, Any]) -> str:
    """A setting's name in tables and pyperf files: ``tarflow-mini[decoding=jacobi,jacobi_tol=0.001]``,
    or the model id for its default options."""
    return f"{model}[{options_text(options)}]" if options else model


def json_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as rows keep them in `config` (tuples as lists, as JSON has them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(options.items())}


def canonical_options(sampler: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` without those equal to their default in the sampler's signature (its family's
    ``_generate`` for a TorchSampler, else ``generate``): what two settings are compared by.

    Example::

        >>> canonical_options(load_sampler("tarflow-mini", device="meta"), {"decoding": "sequential", "jacobi_tol": 0})
        {'jacobi_tol': 0}
    """
    import inspect

    params = inspect.signature(getattr(sampler, "_generate", sampler.generate)).parameters
    unset = inspect.Parameter.empty
    return {k: v for k, v in options.items()
            if k not in params or params[k].default is unset or params[k].default != v or type(v) is not type(
                params[k].default)}


def setting_options(sampler: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a setting is named and recorded by: {} when every option is at its default (so
    ``decoding=sequential`` is TARFlow's default setting, one row), else `options` as given (so
    Jacobi at ``jacobi_tol=1e-4``, the default tolerance, still says its tolerance)."""
    return dict(options) if canonical_options(sampler, options) else {}


def nfe_of(model_id: str, *, guidance: float | None = None, options: Mapping[str, Any] | None = None,
           **overrides: Any) -> int:
    """Network evaluations per image of what runs: the model built (on the meta device) with
    the guidance the run uses and every option that is also a field of its config (an option
    left None means the config's value, by each family's convention), so a guided Rectified
    Flow row counts its unconditional passes and ``denoise=false`` drops TARFlow's score step.

    Example::

        >>> nfe_of("rf-mini"), nfe_of("rf-mini", guidance=0.5)
        (1, 2)
    """
    from adapters import get_spec, model_info

    fields = {f.name for f in dataclasses.fields(get_spec(model_id).config)}
    over = dict(overrides)
    if guidance is not None and "guidance" in fields:
        over["guidance"] = guidance
    over.update({k: v for k, v in (options or {}).items() if k in fields and v is not None})
    return model_info(model_id, **over).nfe
