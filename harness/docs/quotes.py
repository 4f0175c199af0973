"""Quoted numbers: a number the prose prints as a measurement must be one the record holds.

A quote is a number followed by a unit of measurement (ms, s, min, x, %, GFLOP/s, images/s) or
labelled as one (FID, KID, IS, speed-up, CRM, IGM, "measured ..."), outside the generated blocks,
code, comments and link targets. It holds when some committed value of its kind, in its unit,
rounds to it at its printed precision (``30.6x`` holds for a speed-up of 30.554; ``7 min`` for
6.76 minutes), or when a generated block prints it. A setting or threshold is written as code
(```--ci-target 0.05```) or in words, so it is never taken for a measurement.

Example::

    unmatched_quotes("BiFlow-B/2 is 31.9x faster.", Record(Path(".")))   # [Quote("31.9", "x", 1)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from harness.docs.record import Fact, Record
from harness.docs.tables import BLOCKS

NUM = r"\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?"
# printed unit -> (kind of stored value, factor from it to the unit)
UNITS: dict[str, tuple[tuple[str, float], ...]] = {
    "ms": (("ms", 1.0), ("s", 1e3)), "s": (("s", 1.0), ("ms", 1e-3)),
    "min": (("min", 1.0), ("s", 1 / 60), ("ms", 1 / 6e4)),
    "x": (("ratio", 1.0),), "%": (("fraction", 100.0), ("percent", 1.0)), "GFLOP/s": (("flops", 1e-9), ("gflops", 1.0)),
    "images/s": (("rate", 1.0),),
}
UNIT_WORDS = {"seconds": "s", "minutes": "min"}
LABELS = {"FID": "quality", "FIDs": "quality", "KID": "quality", "IS": "quality", "sFID": "quality",
          "FD-DINOv2": "quality", "speed-up": "ratio", "speed-ups": "ratio", "CRM": "crm", "IGM": "igm",
          "measured": "any"}
# Quotes that are definitions, not measurements (keep this short; say why).
ALLOWED = {"95%": "the level of every interval nfebench reports"}

_SPAN = rf"(?P<a>{NUM})(?:\s?(?:-|to)\s?(?P<b>{NUM}))?(?:\s\[(?P<lo>{NUM}), (?P<hi>{NUM})\])?"
_UNIT = r"(?:(?P<u>x|%)(?![\w])|\s(?P<w>ms|s|min|seconds|minutes|GFLOP/s|images/s)(?![\w/]))"
UNIT_QUOTE = re.compile(rf"(?<![\w.\-/]){_SPAN}{_UNIT}(?:\s\[(?P<lo2>{NUM}), (?P<hi2>{NUM})\])?")
LABEL_QUOTE = re.compile(rf"\b(?P<label>{'|'.join(sorted(map(re.escape, LABELS), key=len, reverse=True))})"
                         rf"(?:\s(?:of|at|is|was|=)\s|:?\s){_SPAN}(?![\w])")
_HIDDEN = (re.compile(r"<!-- nfebench:begin ([\w-]+) -->.*?<!-- nfebench:end \1 -->", re.S),
           re.compile(r"^```.*?^```", re.S | re.M), re.compile(r"<!--.*?-->", re.S), re.compile(r"`(?:[^`\n]|\n(?!\n))*`"),
           re.compile(r"\]\([^)]*\)"))


@dataclass(frozen=True)
class Quote:
    """A number a page prints as a measurement: its text, its unit (``ms``, ``x``, ...; for a labelled
    number the kind its label names: ``quality``, ``ratio``, ``crm``, ``igm``, or ``any`` for
    "measured"), and its line."""

    text: str
    unit: str
    line: int


def prose(text: str) -> str:
    """`text` with generated blocks, fenced code, comments, inline code and link targets blanked
    (newlines kept, so line numbers stay)."""
    for pattern in _HIDDEN:
        text = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    return text


def quotes(text: str) -> list[Quote]:
    """Every measured-looking number of a page's prose (see the module docstring)."""
    text, out, seen = prose(text), [], []
    for pattern in (UNIT_QUOTE, LABEL_QUOTE):
        for m in pattern.finditer(text):
            if any(m.start("a") in s for s in seen):
                continue
            seen.append(range(m.start(), m.end()))
            d = m.groupdict()
            unit = LABELS[d["label"]] if "label" in d else d["u"] or UNIT_WORDS.get(d["w"], d["w"])
            line = text.count("\n", 0, m.start()) + 1
            out += [(m.start(k), Quote(d[k], unit, line)) for k in ("a", "b", "lo", "hi", "lo2", "hi2") if d.get(k)]
    return [q for _, q in sorted(out, key=lambda pair: pair[0])]


def _tolerance(printed: str) -> float:
    """Half a unit of the printed last digit: 30.6 -> 0.05, 7 -> 0.5, 2.6e-7 -> 0.05e-7."""
    mantissa, _, exp = printed.replace(",", "").partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exp or 0) - decimals) * (1 + 1e-9)


def holds(quote: Quote, facts: Iterable[Fact]) -> bool:
    """Whether some fact of the quote's kind, in the quote's unit, rounds to the printed number."""
    if f"{quote.text}{quote.unit}" in ALLOWED:
        return True
    value, tol = float(quote.text.replace(",", "")), _tolerance(quote.text)
    if quote.unit in UNITS:
        scale = dict(UNITS[quote.unit])
    else:
        scale = None if quote.unit == "any" else {quote.unit: 1.0}
    return any(abs(f.value * (1.0 if scale is None else scale[f.kind]) - value) <= tol
               for f in facts if scale is None or f.kind in scale)


def all_facts(record: Record) -> list[Fact]:
    """The record's numbers and every number a generated block prints."""
    return record.facts + [f for render_block in BLOCKS.values() for f in render_block(record).facts]


def unmatched_quotes(text: str, record: Record, facts: list[Fact] | None = None) -> list[Quote]:
    """The quotes of `text` that no committed number holds (empty when the page is honest).

    Args:
        text: a page (Markdown).
        record: the committed results.
        facts: `all_facts(record)`, when already computed (checking several pages).

    Example::

        unmatched_quotes("30.6x faster, then 31.9x", record)   # [Quote("31.9", "x", 1)]
    """
    facts = all_facts(record) if facts is None else facts
    return [q for q in quotes(text) if not holds(q, facts)]
