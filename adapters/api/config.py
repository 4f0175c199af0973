"""Config fields with their help text and declared types: every family's config dataclass declares
its fields with `option`, so `nfebench list`, `--set` and the docs read one description per field,
and every override (`load_sampler(..., k=v)`, ``--set k=v``) is checked against its field's type
before anything is built (`check_overrides`).

Example::

    @dataclass(frozen=True)
    class SiTConfig:
        hidden_size: int = option(768, "transformer width")
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from adapters.api.errors import InputError

TUPLE_SEP = "/"  # how the command line writes a tuple: gs_segments=1/1/1/8, guidance_interval=0/0.7


def parse_literal(raw: str) -> Any:
    """``"2"`` -> 2, ``"1e-3"`` -> 0.001, ``"true"`` -> True, ``"none"`` -> None, else the string."""
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw.strip()


def option(default: Any, help: str) -> Any:
    """A dataclass field with `default` and its `help` (kept in the field's metadata)."""
    return dataclasses.field(default=default, metadata={"help": help})


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a finite number", bool: "true or false", str: "text", type(None): "none"}
    if tp in names:
        return names[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_type_name(args[0])}s"
        return f"a tuple of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    return getattr(tp, "__name__", str(tp))


def coerce(tp: Any, value: Any) -> Any:
    """`value` as declared type `tp` (int, float, bool, str, unions with None, tuples of those);
    raises TypeError when it is not one. An int is a float; a list is a tuple; a bool is never a
    number; floats must be finite."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in sorted(args, key=lambda a: a is str):  # text last: "3" stays a number's error
            try:
                return coerce(arm, value)
            except TypeError:
                pass
        raise TypeError
    if origin is tuple:
        if isinstance(value, str) and TUPLE_SEP in value:  # "0/0.7", as the command line writes a tuple
            value = tuple(parse_literal(part) for part in value.split(TUPLE_SEP))
        if not isinstance(value, (tuple, list)):
            raise TypeError
        arms = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(arms) != len(value):
            raise TypeError
        return tuple(coerce(a, v) for a, v in zip(arms, value))
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise TypeError
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise TypeError
    return value  # a type this check does not describe (a Callable, a Sequence): the owner checks it


def check_value(owner: str, key: str, tp: Any, value: Any) -> Any:
    """`coerce(tp, value)`, or an InputError in the field's own terms:
    ``"tarflow: channels must be an integer, got 'abc'"``."""
    try:
        return coerce(tp, value)
    except TypeError:
        raise InputError(f"{owner}: {key} must be {_type_name(tp)}, got {value!r}") from None


def check_overrides(owner: str, config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Config overrides of dataclass `config`, each checked against its field's declared type; an
    unknown key is an InputError naming the valid ones."""
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise InputError(f"{owner}: unknown config option(s) {', '.join(unknown)}; valid options: "
                         f"{', '.join(sorted(fields))}")
    hints = typing.get_type_hints(type(config))
    return {k: check_value(owner, k, hints[k], v) for k, v in overrides.items()}
