"""Config fields with their help text: every family's config dataclass declares its fields with
`option`, so `nfebench list`, `--set` and the docs read one description per field.

Example::

    @dataclass(frozen=True)
    class SiTConfig:
        hidden_size: int = option(768, "transformer width")
"""

from __future__ import annotations

import dataclasses
from typing import Any


def option(default: Any, help: str) -> Any:
    """A dataclass field with `default` and its `help` (kept in the field's metadata)."""
    return dataclasses.field(default=default, metadata={"help": help})
