"""Which model is compared with which: each fast model and the slower model it claims to beat.

The one place the comparisons live. `nfebench bench` times every pair whose two models are
both in ``--models`` in alternating rounds and writes ``speedup`` rows; the leaderboard's
``teacher`` and ``speedup`` columns and the mini table's speed-up come from the same pairs.

A pair is ``(fast, teacher)``: today each one-step student against its autoregressive
teacher. A fast model may appear in several pairs (against a multi-step baseline as well,
say); the first pair naming it is its leaderboard teacher.

Example::

    teacher_of("biflow-b2")          # "itarflow-b2"
    pairs_among(["sit-b2", "biflow-b2", "itarflow-b2"])   # [("biflow-b2", "itarflow-b2")]
"""

from __future__ import annotations

from typing import Iterable

PAIRS: tuple[tuple[str, str], ...] = (
    ("biflow-b2", "itarflow-b2"),
    ("biflow-xl2", "itarflow-xl2"),
    ("biflow-mini", "tarflow-mini"),
)


def teacher_of(model: str) -> str | None:
    """The model `model` is first compared with, or None."""
    return next((t for f, t in PAIRS if f == model), None)


def pairs_among(models: Iterable[str]) -> list[tuple[str, str]]:
    """The pairs whose two models are both in `models`, in `PAIRS` order."""
    present = set(models)
    return [(f, t) for f, t in PAIRS if f in present and t in present]
