"""The main board: one row per model x setting from published and measured rows (`build`).

A setting is (model, source, nfe, device, device_name, backend, dtype, compiled, batch_size,
options), ``options`` being the sampler options of ``config.options``
(`harness.settings.options_text`, "" for the defaults). Its timing columns are
``ms_per_image`` (generator only, decode off) and ``ms_per_image_decode`` (decode on),
``quality`` the quality gate's verdict on its timings (`harness.quality`: reference,
verified, failed, unverified; empty for rows older than the gate). FID (with its interval
``fid_ci_low``/``fid_ci_high``) and IS belong to (model, source, nfe, backend, dtype,
compiled, options), what makes the samples, and are repeated on each of its settings
(devices, batch sizes), with ``quality_n`` (samples) and ``fid_reference`` (mode and
reference batch) beside them.

Rules:
- A quality row whose `weights` contains ``random-init`` never gets a FID/IS column or a
  rank: random weights say nothing about quality. Its timings do count (speed does not
  depend on the weights' values).
- ``speedup`` is the model's measured ``speedup`` row for the setting over its teacher at
  the teacher's exact decoding (``config.teacher_exact``; the teacher timed in alternating
  rounds in the same run, `harness.pairs`), with ``speedup_ci_low`` and ``speedup_ci_high``;
  where there is none (paper rows, runs of schema 1), the teacher's ms per image at its
  default options divided by the row's in the same source, device, backend, dtype, compiled
  mode and batch size, with no interval.
- Rows are sorted by FID rank within their comparison group (the most samples first; rows
  without a FID last), then by model and setting.
- The Markdown shows ten columns, joining the setting's cells, each timing with its decoded
  twin and device, and the source with its evidence and gate verdict; the CSV keeps them apart.
"""

from __future__ import annotations

from harness.leaderboard.choice import add_ranks, choose, comparison_group
from harness.leaderboard.render import Table, joined
from harness.leaderboard.rows import (
    QUALITY_KEY,
    SETTING,
    fid_cells,
    finite,
    is_eager,
    is_random_weights,
    sort_number,
    teacher_exact,
    teacher_named,
    usable,
)
from harness.pairs import teacher_of
from harness.results import FID, IS, MS_PER_IMAGE, SPEEDUP

LEADERBOARD_COLUMNS = (
    "fid_rank", "model", "family", "params", "nfe", "source", "device", "device_name", "backend", "dtype",
    "compiled", "batch_size", "options", "ms_per_image", "ms_per_image_decode", "quality", "teacher", "speedup",
    "speedup_ci_low", "speedup_ci_high", "speedup_decode", "speedup_decode_ci_low", "speedup_decode_ci_high",
    "fid", "fid_ci_low", "fid_ci_high", "is", "quality_n", "fid_reference", "weights", "evidence", "citation",
)


def _setting(t: Table, e: dict) -> str:
    """``decoding=jacobi,jacobi_tol=0.001, bfloat16, compiled, b4``: options, dtype, compile mode, batch size."""
    return joined(e["options"], e["dtype"], "" if is_eager(e["compiled"]) else "compiled",
                  f"b{e['batch_size']}" if e["batch_size"] else "", sep=", ")


def _fid(t: Table, e: dict) -> str:
    """``6.50 [6.10, 6.90], N 1000``: ranks compare FIDs of equal N (and reference)."""
    return joined(t.with_interval("fid", e), f"N {e['quality_n']}" if e["fid"] is not None and e["quality_n"] else "",
                  sep=", ")


def _times(t: Table, e: dict) -> str:
    """``336.181; decoded 3873.596; cpu (AMD EPYC)``: the generator's ms per image, with the decode, where."""
    gen, decoded = t.cell("ms_per_image", e["ms_per_image"]), t.cell("ms_per_image_decode", e["ms_per_image_decode"])
    if not (gen or decoded):
        return ""
    where = e["device"] + (f" ({e['device_name']})" if e["device_name"] else "")
    return joined(gen, f"decoded {decoded}" if decoded else "", where)


def _speedups(t: Table, e: dict) -> str:
    """``30.6 [29.6, 31.4]; decoded 3.7 [3.7, 3.9]; over itarflow-b2``."""
    gen, decoded = t.with_interval("speedup", e), t.with_interval("speedup_decode", e)
    if not (gen or decoded):
        return ""
    return joined(gen, f"decoded {decoded}" if decoded else "", f"over {e['teacher']}")


def _source(t: Table, e: dict) -> str:
    """``paper, secondary: arXiv 2512.10953`` or ``measured, reference, random weights: run ...``."""
    random = "random weights" if e["source"] == "measured" and is_random_weights(e["weights"] or "") else ""
    return f"{joined(e['source'], e['evidence'], e['quality'], random, sep=', ')}: {e['citation']}"


BOARD = Table(
    "", LEADERBOARD_COLUMNS,
    decimals={"ms_per_image": 3, "ms_per_image_decode": 3, "speedup": 1, "speedup_ci_low": 1, "speedup_ci_high": 1,
              "speedup_decode": 1, "speedup_decode_ci_low": 1, "speedup_decode_ci_high": 1, "fid": 2,
              "fid_ci_low": 2, "fid_ci_high": 2, "is": 1},
    # a ranked FID without an interval is marked "(no interval)"
    intervals={"fid": True, "speedup": False, "speedup_decode": False},
    markdown_columns=("fid_rank", "model", "params", "nfe", "setting", "fid [95%], N", "is",
                      "ms per image; decoded; device", "speed-up [95%]; decoded; over", "source"),
    cells={"setting": _setting, "fid [95%], N": _fid, "ms per image; decoded; device": _times,
           "speed-up [95%]; decoded; over": _speedups, "source": _source},
)


def build(rows: list[dict]) -> list[dict]:
    """Leaderboard rows (numbers as floats, blanks as None) from published and measured rows.

    Args:
        rows: rows as `read_published` / `read_runs` return them.

    Returns:
        One dict per model x setting with the keys of `LEADERBOARD_COLUMNS`, sorted by FID
        rank within its comparison group (rows without FID last), then model and setting.

    Example::

        board = build(read_published() + read_runs())
        BOARD.to_markdown(board)  # what leaderboard.md holds
    """
    rows = usable(rows)
    timing = [r for r in rows if r["metric"] == MS_PER_IMAGE and r["decode"] in ("on", "off")]
    quality = [r for r in rows if r["metric"] in (FID, IS) and not is_random_weights(r["weights"])]
    # measured speed-ups at one batch size (the best-throughput rows have none: no setting of their own),
    # over the teacher at its exact decoding
    ratios = [dict(r, teacher=teacher_named(r)) for r in rows
              if r["metric"] == SPEEDUP and r["batch_size"] and r["decode"] in ("on", "off") and teacher_exact(r)]

    times = choose(timing, SETTING + ("decode",), by_n=False)
    scores = choose(quality, QUALITY_KEY + ("metric",), by_n=True)
    speedups = choose(ratios, SETTING + ("decode", "teacher"), by_n=False)

    board: dict[tuple, dict] = {}
    sources: dict[tuple, list[dict]] = {}
    for k, r in sorted(times.items(), key=lambda kr: kr[0][-1] != "off"):  # decode off first: its quality counts
        setting = k[:-1]
        entry = board.setdefault(setting, _blank(r))
        entry["ms_per_image_decode" if r["decode"] == "on" else "ms_per_image"] = r["value"]
        entry["quality"] = entry["quality"] or r.get("quality") or None
        sources.setdefault(setting, []).append(r)
    where = [SETTING.index(c) for c in QUALITY_KEY]
    for k, r in scores.items():
        qk, metric = k[:-1], k[-1]
        settings = [s for s in board if tuple(s[i] for i in where) == qk]
        if not settings:
            settings = [tuple(r[c] if c in QUALITY_KEY else "" for c in SETTING)]
            board[settings[0]] = _blank(r, timing=False)
        for s in settings:
            board[s][metric] = r["value"]
            if metric == FID:
                board[s].update(fid_cells(r))
            sources.setdefault(s, []).append(r)

    for s, entry in board.items():
        contributing = sources[s]
        entry["weights"] = "; ".join(sorted({r["weights"] for r in contributing if r["weights"]}))
        # Measured rows cite the run they came from.
        entry["citation"] = "; ".join(sorted({r["citation"] or f"run {r['run_id']}" for r in contributing}))
        evidence = {r["evidence"] for r in contributing if r["evidence"]}
        entry["evidence"] = "secondary" if "secondary" in evidence else ("verified" if evidence else "")
        for col in ("family", "params"):
            entry[col] = entry[col] or next((r[col] for r in contributing if r[col]), "")

    _add_speedups(board, speedups)
    add_ranks(board, QUALITY_KEY)
    return sorted(board.values(), key=_sort_key)


def _blank(r: dict, timing: bool = True) -> dict:
    """An entry of the board for `r`'s setting, every column None; without `timing` (a FID with no
    timed setting) the device and batch size stay blank."""
    entry = {c: None for c in LEADERBOARD_COLUMNS}
    for c in SETTING:
        entry[c] = r[c] if timing or c in QUALITY_KEY else ""
    entry["family"], entry["params"] = r["family"], r["params"]
    return entry


def _add_speedups(board: dict[tuple, dict], measured: dict[tuple, dict]) -> None:
    """`teacher` and the speed-up columns: the measured speedup row of the setting where one was
    chosen, else the ratio of the teacher's ms per image (at its default options) and the row's (no interval)."""
    for s, entry in board.items():
        teacher = teacher_of(entry["model"])
        if teacher is None:
            continue
        peers = sorted(t for t in board if t[0] == teacher and t[1] == s[1] and t[3:-1] == s[3:-1] and t[-1] == "")
        for decode, ms, col in (("off", "ms_per_image", "speedup"), ("on", "ms_per_image_decode", "speedup_decode")):
            row = measured.get(s + (decode, teacher))
            if row is not None:
                entry[col], entry[col + "_ci_low"], entry[col + "_ci_high"] = (
                    row["value"], finite(row["ci_low"]), finite(row["ci_high"]))
            elif peers and entry[ms] and board[peers[0]][ms]:
                entry[col] = board[peers[0]][ms] / entry[ms]
            if peers or row is not None:
                entry["teacher"] = teacher


def _sort_key(e: dict) -> tuple:
    """Ranked entries first, group by group (the most samples first), by rank; then model and setting."""
    ranked = e["fid_rank"] is not None
    n, reference, network = comparison_group(e) if ranked else (0, "", "")
    return (not ranked, -n, reference, network, e["fid_rank"] or 0, e["model"], e["source"], sort_number(e["nfe"]),
            e["nfe"], e["device"], e["device_name"], e["backend"], e["dtype"], e["compiled"],
            sort_number(e["batch_size"]), e["batch_size"], e["options"])
