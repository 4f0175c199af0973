"""The table `nfebench bench` prints at the end, and BiFlow's measured speed-up.

The speed-up is iTARFlow-B/2's time per image over BiFlow-B/2's at the same batch size,
dtype and compile mode: once for the generator alone (decode=off) and once end to end
(decode=on), next to the BiFlow paper's 224x and 42x.

Example::

    from rich.console import Console
    Console().print(timing_table(result.rows))
    Console().print(speedup_table(result.rows))
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from rich.table import Table

from harness.results import CALIBRATION_MS, COMPILE_MS, IMAGES_PER_S, MFU, MS_PER_IMAGE, OK, PEAK_MEM_MB

FAST, SLOW = "biflow-b2", "itarflow-b2"
# BiFlow paper speed table (arXiv 2512.10953; read only in secondary write-ups): on a TPU,
# 0.29 ms vs 65 ms per image for the generators, +1.3 ms each for the SD-VAE decode.
PAPER_SPEEDUP = {"off": 224.0, "on": 42.0}
PAPER_SOURCE = "BiFlow paper (arXiv 2512.10953, secondary): TPU, 0.29 vs 65 ms/image, +1.3 ms decode"

Row = Mapping[str, Any]


def _key(r: Row) -> tuple:
    return (r.get("model"), bool(r.get("compiled")), r.get("batch_size"), r.get("decode"))


def _points(rows: Iterable[Row]) -> dict[tuple, dict[str, Row]]:
    """(model, compiled, batch size, decode) -> metric -> row, in first-seen order."""
    points: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        if r.get("metric") == CALIBRATION_MS:
            continue
        points.setdefault(_key(r), {})[r["metric"]] = r
    return points


def _num(value: float) -> str:
    """About three significant digits, so the table fits an 80-column terminal."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _fmt(row: Row | None) -> str:
    if row is None or row.get("value") in (None, ""):
        return "-"
    return _num(float(row["value"]))


def timing_table(rows: Iterable[Row], title: str = "nfebench bench") -> Table:
    """One line per measured point: median ms per image, its MAD and the number of timed
    calls, images/s, peak memory (MiB), MFU, and for JAX runs the compile time (s);
    failed points show their status."""
    rows = list(rows)
    points = _points(rows)
    compile_col = any(COMPILE_MS in m for m in points.values())
    table = Table(title=title)
    for col in ("model", "comp", "bs", "decode", "ms/img", "±", "n", "img/s", "MiB", "MFU") + (
            ("compile s",) if compile_col else ()):
        table.add_column(col, justify="left" if col in ("model", "decode") else "right",
                         no_wrap=col == "model")
    for (model, compiled, bs, decode), m in points.items():
        first = next(iter(m.values()))
        cells = [model, "yes" if compiled else "no", str(bs), decode]
        if first.get("status", OK) != OK:
            table.add_row(*cells, f"{first['status']}: {first.get('notes', '')}"[:40], *[""] * (5 + compile_col))
            continue
        per_image, mfu = m[MS_PER_IMAGE], m.get(MFU)
        spread = "-" if per_image.get("spread") in (None, "") else _num(float(per_image["spread"]))
        table.add_row(*cells, _fmt(per_image), spread, str(per_image.get("n", "")),
                      _fmt(m.get(IMAGES_PER_S)), _fmt(m.get(PEAK_MEM_MB)),
                      "-" if mfu is None else f"{100 * float(mfu['value']):.1f}%",
                      *((_num(float(m[COMPILE_MS]["value"]) / 1e3) if COMPILE_MS in m else "-",) if compile_col else ()))
    calib = [r for r in rows if r.get("metric") == CALIBRATION_MS]
    if calib:
        workload = (calib[0].get("config") or {}).get("workload", "")
        table.caption = f"calibration ({workload}): {float(calib[0]['value']):.1f} ms"
    return table


def speedups(rows: Iterable[Row], fast: str = FAST, slow: str = SLOW) -> list[dict[str, Any]]:
    """Measured `slow`/`fast` time-per-image ratios, one per (compiled, batch size, decode)
    where both models have an ok ms_per_image row."""
    per_image = {_key(r): float(r["value"]) for r in rows
                 if r.get("metric") == MS_PER_IMAGE and r.get("status", OK) == OK}
    out = []
    for (model, compiled, bs, decode), fast_ms in per_image.items():
        if model != fast or decode not in PAPER_SPEEDUP:
            continue
        slow_ms = per_image.get((slow, compiled, bs, decode))
        if slow_ms is not None:
            out.append(dict(compiled=compiled, batch_size=bs, decode=decode, fast_ms=fast_ms, slow_ms=slow_ms,
                            speedup=slow_ms / fast_ms, paper=PAPER_SPEEDUP[decode]))
    return out


def speedup_table(rows: Iterable[Row], fast: str = FAST, slow: str = SLOW) -> Table:
    """BiFlow-B/2's measured speed-up over iTARFlow-B/2 next to the paper's."""
    found = speedups(rows, fast, slow)
    caption = PAPER_SOURCE if found else f"not measured: needs {fast} and {slow} in --models"
    table = Table(title=f"{fast} speed-up over {slow}", caption=caption)
    for col in ("comp", "bs", "timed", f"{slow} ms/img", f"{fast} ms/img", "measured", "paper"):
        table.add_column(col, justify="left" if col == "timed" else "right")
    for s in sorted(found, key=lambda s: (s["compiled"], s["decode"] == "on", s["batch_size"])):
        table.add_row("yes" if s["compiled"] else "no", str(s["batch_size"]),
                      "generator" if s["decode"] == "off" else "+ decode",
                      _num(s["slow_ms"]), _num(s["fast_ms"]), f"{s['speedup']:.1f}x", f"{s['paper']:.0f}x")
    return table
