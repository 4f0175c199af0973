"""The tables `nfebench bench` prints at the end: timings, measured speed-ups, and floors.

- `timing_table`: per point (a model's setting: its options, if any, in the model column) the
  median ms per image with its 95% interval, n, images/s, memory, MFU (where the device's
  peak is known) and the fraction of the run's measured matmul peak, the quality gate's
  verdict and the decoding passes (mean/max over blocks) where a run has them; a point whose
  interval missed its target says so beside its number, as pyperf does: ``unstable: CV 41%, n 2``.
- `speedup_table`: the ``speedup`` rows (each fast model over its teacher, timed in
  alternating rounds, `harness.pairs`) with their intervals, next to the BiFlow paper's
  224x and 42x for BiFlow-B/2 over iTARFlow-B/2.
- `floors_table`: per model and batch size the two floors a time per image cannot go
  below: compute (FLOPs per image over the measured matmul FLOP/s) and latency (sequential
  steps x the shortest measured step, shared by the batch), which one binds, and the fraction
  of the matmul peak the measured time reaches. A one-step model has no latency floor (its one
  step is the whole measured call, not a bound below it), so its compute floor binds; an
  autoregressive teacher's thousands of dependent steps put it on its latency floor, which
  falls as 1/batch, so the speed-up falls with the batch towards the ratio of the two compute
  floors (`floors_caption` says it with the numbers).

`console_for` gives the Console to print them with: the terminal's, or, when stdout is not a
terminal (tox, CI logs, a pipe), one as wide as the widest table, so no cell is cut to "…".

Example::

    from rich.console import Console
    Console().print(timing_table(result.rows))
    Console().print(speedup_table(result.rows))
    Console().print(floors_table(result.rows, {m: model_info(m) for m in models}))
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adapters.api.sampler import ModelInfo
from harness.results import (
    CALIBRATION_MS,
    COMPILE_MS,
    FRAC_MATMUL_PEAK,
    IMAGES_PER_S,
    IMAGES_PER_S_PER_CHIP,
    MFU,
    MS_PER_BATCH,
    MS_PER_IMAGE,
    OK,
    PEAK_MEM_MB,
    SPEEDUP,
)
from harness.settings import label
from harness.timing.peaks import flops_per_image

# BiFlow paper speed table (arXiv 2512.10953; read only in secondary write-ups): on a TPU,
# 0.29 ms vs 65 ms per image for the generators, +1.3 ms each for the SD-VAE decode.
PAPER_PAIR = ("biflow-b2", "itarflow-b2")
PAPER_SPEEDUP = {"off": 224.0, "on": 42.0}
PAPER_SOURCE = "BiFlow paper (arXiv 2512.10953, secondary): TPU, 0.29 vs 65 ms/image, +1.3 ms decode"

Row = Mapping[str, Any]
# The metrics of a timed point (a failed point has one ms_per_batch row); not the speed-up, calibration
# or quality-gate rows.
TIMING_METRICS = (MS_PER_BATCH, MS_PER_IMAGE, IMAGES_PER_S, IMAGES_PER_S_PER_CHIP, PEAK_MEM_MB, MFU, FRAC_MATMUL_PEAK,
                  COMPILE_MS)


def _key(r: Row) -> tuple:
    return (label(str(r.get("model")), _config(r).get("options") or {}), bool(r.get("compiled")), r.get("batch_size"),
            r.get("decode"))


def _points(rows: Iterable[Row]) -> dict[tuple, dict[str, Row]]:
    """(model, compiled, batch size, decode) -> metric -> row, in first-seen order."""
    points: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        if r.get("metric") not in TIMING_METRICS:
            continue
        points.setdefault(_key(r), {})[r["metric"]] = r
    return points


def _num(value: float) -> str:
    """About three significant digits, so the table fits an 80-column terminal."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _has(row: Row | None, col: str) -> bool:
    if row is None:
        return False
    v = row.get(col)
    return v not in (None, "") and not (isinstance(v, float) and math.isnan(v))


def _fmt(row: Row | None) -> str:
    return _num(float(row["value"])) if _has(row, "value") else "-"


def _interval(row: Row, fmt=_num) -> str:
    if not (_has(row, "ci_low") and _has(row, "ci_high")):
        return "-"
    return f"{fmt(float(row['ci_low']))}-{fmt(float(row['ci_high']))}"


def _config(row: Row) -> dict:
    c = row.get("config") or {}
    if isinstance(c, str):
        try:
            c = json.loads(c)
        except ValueError:
            return {}
    return c if isinstance(c, dict) else {}


def _is_true(v: Any) -> bool:
    return v is True or str(v) == "True"


def warning(row: Row) -> str:
    """pyperf's warning for a row whose interval missed its target: ``unstable: CV 41%, n 2``; "" when stable."""
    if _is_true(row.get("stable")):
        return ""
    cv = _config(row).get("cv")
    return "unstable: " + (f"CV {100 * cv:.0f}%, " if cv is not None else "") + f"n {row.get('n', '')}"


def _iterations(row: Row) -> str:
    """Decoding passes per block of the point, mean/max (``7.5/12``), or "-"."""
    c = _config(row)
    if "iterations_mean" not in c:
        return "-"
    return f"{float(c['iterations_mean']):.3g}/{c.get('iterations_max', '')}"


def _has_text(row: Row | None, col: str) -> bool:
    return row is not None and str(row.get(col) or "") not in ("", "nan")


def timing_table(rows: Iterable[Row], title: str = "nfebench bench") -> Table:
    """One line per measured point: median ms per image with its 95% interval and the number of
    timed calls, images/s, peak memory (MiB), MFU, the fraction of the run's matmul peak, for
    JAX runs the compile time (s), where the run has them the quality verdict and the decoding
    passes, and the instability or representativeness warning; failed points show their status."""
    rows = list(rows)
    points = _points(rows)
    compile_col = any(COMPILE_MS in m for m in points.values())
    quality_col = any(_has_text(m.get(MS_PER_IMAGE), "quality") for m in points.values())
    iters_col = any(_iterations(m[MS_PER_IMAGE]) != "-" for m in points.values() if MS_PER_IMAGE in m)
    table = Table(title=title)
    cols = ("model", "comp", "bs", "decode", "ms/img", "95% CI", "n", "img/s", "MiB", "MFU", "of peak") + (
        ("compile s",) if compile_col else ()) + (("quality",) if quality_col else ()) + (
        ("iters",) if iters_col else ()) + ("",)
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "decode", "quality", "") else "right",
                         no_wrap=col == "model")
    for (model, compiled, bs, decode), m in points.items():
        failed = next((r for r in m.values() if r.get("status", OK) != OK), None)
        cells = [escape(model), "yes" if compiled else "no", str(bs), decode]  # a setting's label has [options]
        if failed is not None:  # (a JAX point may have its compile row before the failure)
            table.add_row(*cells, escape(f"{failed['status']}: {failed.get('notes', '')}"[:40]),
                          *[""] * (len(cols) - 5))
            continue
        per_image, mfu, frac = m[MS_PER_IMAGE], m.get(MFU), m.get(FRAC_MATMUL_PEAK)
        flag = "not representative" if "not representative" in str(per_image.get("notes") or "") else ""
        table.add_row(*cells, _fmt(per_image), _interval(per_image), str(per_image.get("n", "")),
                      _fmt(m.get(IMAGES_PER_S)), _fmt(m.get(PEAK_MEM_MB)),
                      "-" if mfu is None else f"{100 * float(mfu['value']):.1f}%",
                      "-" if frac is None else f"{100 * float(frac['value']):.0f}%",
                      *((_num(float(m[COMPILE_MS]["value"]) / 1e3) if COMPILE_MS in m else "-",) if compile_col else ()),
                      *((str(per_image.get("quality") or "-"),) if quality_col else ()),
                      *((_iterations(per_image),) if iters_col else ()),
                      "; ".join(w for w in (warning(per_image), flag) if w))
    calib = [r for r in rows if r.get("metric") == CALIBRATION_MS]
    if calib:
        table.caption = calibration_caption(calib)
    return table


def calibration_caption(calib: list[Row]) -> str:
    """The calibration at the start (and end) of the run, the matmul peak, and what an unstable or
    changing calibration means for the other figures."""
    c = _config(calib[0])
    times = ", ".join(f"{_config(r).get('when', 'once')} {float(r['value']):.1f} ms" for r in calib)
    text = f"calibration ({c.get('workload', '')}): {times}"
    if "peak_flop_per_s" in c:
        text += f"; fastest call {c['peak_flop_per_s'] / 1e9:.0f} GFLOP/s (the run's matmul peak)"
    unsure = warning(calib[0])
    if unsure:
        text += f"; {unsure}: the calibration ratio and every fraction of the peak are unsure"
    if len(calib) > 1 and all(_has(r, "ci_low") for r in calib):
        low = min(calib, key=lambda r: float(r["value"]))
        high = max(calib, key=lambda r: float(r["value"]))
        if float(high["ci_low"]) > float(low["ci_high"]):
            text += "; the machine's speed changed during the run"
    return text


def speedup_rows(rows: Iterable[Row]) -> list[Row]:
    """The run's ok ``speedup`` rows: per batch size first (by compile mode, decode, batch size), then best-throughput ones."""
    found = [r for r in rows if r.get("metric") == SPEEDUP and r.get("status", OK) == OK]
    return sorted(found, key=lambda r: (not _has(r, "batch_size"), bool(r.get("compiled")), r.get("decode") == "on",
                                        str(r.get("model")), float(r["batch_size"]) if _has(r, "batch_size") else 0))


def console_for(*renderables: Any) -> Console:
    """The Console to print `renderables` with: the terminal's own; when stdout is not a terminal
    (tox, CI logs, a pipe: rich would assume 80 columns and cut every cell to "…"), one as wide
    as the widest of them."""
    console = Console()
    if console.is_terminal:
        return console
    probe = Console(width=10_000)
    return Console(width=max([80] + [probe.measure(r).maximum for r in renderables]))


def speedup_table(rows: Iterable[Row]) -> Table:
    """Each fast model's measured speed-up over its teacher, with its 95% interval, next to the paper's."""
    found = speedup_rows(rows)
    caption = PAPER_SOURCE if found else ("not measured: needs a fast model and its teacher in --models "
                                          "(harness.pairs), e.g. biflow-b2 with itarflow-b2")
    compiled_col = any(r.get("compiled") for r in found)
    table = Table(title="measured speed-ups: teacher ms/img over fast ms/img, timed in alternating rounds",
                  caption=caption)
    for col in ("fast", "teacher") + (("comp",) if compiled_col else ()) + (
            "bs", "decode", "speed-up", "95% CI", "rounds", "paper", ""):
        table.add_column(col, justify="left" if col in ("fast", "teacher", "decode", "") else "right",
                         no_wrap=col != "")
    for r in found:
        c = _config(r)
        bs = str(r["batch_size"]) if _has(r, "batch_size") else f"best {c.get('batch_size')}/{c.get('teacher_batch_size')}"
        paper = PAPER_SPEEDUP.get(r.get("decode")) if (r.get("model"), c.get("teacher")) == PAPER_PAIR else None
        table.add_row(escape(label(str(r["model"]), c.get("options") or {})),
                      escape(label(str(c.get("teacher", "")), c.get("teacher_options") or {})),
                      *(("yes" if r.get("compiled") else "no",) if compiled_col else ()), bs, str(r.get("decode")),
                      f"{float(r['value']):.1f}x", _interval(r, lambda v: f"{v:.1f}"), str(r.get("n", "")),
                      "-" if paper is None else f"{paper:.0f}x", warning(r))
    return table


def matmul_peak(rows: Iterable[Row]) -> float | None:
    """The run's measured matmul FLOP/s in its dtype (from its frac_matmul_peak rows, else its calibration)."""
    rows = list(rows)
    for r in rows:
        if r.get("metric") == FRAC_MATMUL_PEAK and "matmul_peak_flops" in _config(r):
            return float(_config(r)["matmul_peak_flops"]) / float(_config(r).get("chips", 1))
    for r in rows:
        if r.get("metric") == CALIBRATION_MS and "peak_flop_per_s" in _config(r):
            return float(_config(r)["peak_flop_per_s"])
    return None


def floors(rows: Iterable[Row], infos: Mapping[str, ModelInfo]) -> list[dict[str, Any]]:
    """Per model and batch size (generator alone, decode off, its default options): measured ms per
    image and its two floors.

    compute floor = FLOPs per image / the run's matmul FLOP/s; latency floor per image =
    sequential steps x the shortest measured step (the model's least ms per batch over its
    steps, over the batch sizes timed) / batch size, for a model of more than one sequential
    step. A one-step model has none: its "shortest step" is its own shortest call, so the floor
    would be the measured time itself and always bind. ``bound`` names the larger floor, or
    ``compute`` for a one-step model (None where the peak is unknown, as without calibration);
    ``of_peak`` = compute floor / measured ms per image, the fraction of the matmul peak the
    model reaches. Settings with options are left out: an option such as Jacobi decoding
    changes the dependent steps that `ModelInfo.sequential_steps` counts.
    """
    rows = list(rows)
    peak = matmul_peak(rows)
    per_batch = {(r["model"], bool(r.get("compiled")), int(r["batch_size"])): float(r["value"]) for r in rows
                 if r.get("metric") == MS_PER_BATCH and r.get("decode") == "off" and r.get("status", OK) == OK
                 and r.get("model") in infos and _has(r, "value") and not _config(r).get("options")}
    out = []
    for (model, compiled, bs), ms in sorted(per_batch.items()):
        info = infos[model]
        step = min(v for (m, c, _), v in per_batch.items() if (m, c) == (model, compiled)) / info.sequential_steps
        compute = None if peak is None else flops_per_image(info) / peak * 1e3
        latency = info.sequential_steps * step / bs if info.sequential_steps > 1 else None
        if latency is None:
            bound = "compute" if compute is not None else None
        else:
            bound = "latency" if compute is None or latency >= compute else "compute"
        out.append(dict(model=model, compiled=compiled, batch_size=bs, ms_per_image=ms / bs, gflop=flops_per_image(info) / 1e9,
                        steps=info.sequential_steps, step_ms=step, compute_ms=compute, latency_ms=latency, bound=bound,
                        of_peak=None if compute is None else compute / (ms / bs)))
    return out


def floors_table(rows: Iterable[Row], infos: Mapping[str, ModelInfo]) -> Table:
    """`floors` as a table, with `floors_caption` under it."""
    rows = list(rows)
    found = floors(rows, infos)
    table = Table(title="floors per image (generator alone): compute = FLOPs / matmul peak, "
                        "latency = sequential steps x shortest step / batch (none for one step)",
                  caption=floors_caption(rows, infos))
    for col in ("model", "comp", "bs", "GFLOP/img", "steps", "step ms", "compute floor", "latency floor", "measured",
                "of peak", "bound by"):
        table.add_column(col, justify="left" if col in ("model", "bound by") else "right")
    for f in found:
        table.add_row(f["model"], "yes" if f["compiled"] else "no", str(f["batch_size"]), _num(f["gflop"]),
                      str(f["steps"]), _num(f["step_ms"]), "-" if f["compute_ms"] is None else _num(f["compute_ms"]),
                      "-" if f["latency_ms"] is None else _num(f["latency_ms"]), _num(f["ms_per_image"]),
                      "-" if f["of_peak"] is None else f"{100 * f['of_peak']:.0f}%", f["bound"] or "-")
    return table


def floors_caption(rows: Iterable[Row], infos: Mapping[str, ModelInfo]) -> str:
    """Why each measured speed-up falls with the batch, in numbers: the teacher's latency floor is
    shared by the batch, the compute floors are not, so the ratio tends to theirs."""
    rows = list(rows)
    peak = matmul_peak(rows)
    if peak is None:
        return "no matmul peak measured (--no-calibration): compute floors unknown"
    lines = [f"matmul peak {peak / 1e9:.0f} GFLOP/s, measured by this run's calibration workload"]
    for fast, teacher in sorted({(r["model"], _config(r).get("teacher")) for r in speedup_rows(rows)}):
        if fast not in infos or teacher not in infos:
            continue
        f_info, t_info = infos[fast], infos[teacher]
        t_floor = [f for f in floors(rows, infos) if f["model"] == teacher]
        if not t_floor:
            continue
        step = t_floor[0]["step_ms"]
        compute_ratio = flops_per_image(t_info) / flops_per_image(f_info)
        lines.append(f"{fast} over {teacher}: {teacher}'s {t_info.sequential_steps} dependent steps x {_num(step)} ms "
                     f"= {_num(t_info.sequential_steps * step / 1e3)} s per batch are shared by the batch, its compute "
                     f"({_num(flops_per_image(t_info) / 1e9)} GFLOP/img) is not: where the latency floor binds, a larger "
                     f"batch lowers the speed-up, which tends to the ratio of the compute floors, {compute_ratio:.1f}x")
    return "\n".join(lines)
