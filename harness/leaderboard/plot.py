"""The plots: ``pareto.png``, FID against generator-only ms per image (log axis), and the
frontier plots (`plot_frontier`): every measured quality against its measured time, one panel
per frontier, intervals as error bars on both axes, the frontier drawn.

Rule: the plot pairs a measured time with a paper's FID only for a setting whose timing is
its own reference or verified (`harness.leaderboard.choice.reference_like`; older rows:
float32, eager, default options), and its legend says so; a fast setting's unverified time
is never drawn at a FID it was not shown to keep. Its bytes depend on the matplotlib version
(the PNG is not covered by the tables' byte-for-byte promise).

Example::

    board = build(read_published() + read_runs())
    plot_pareto(board, "results/pareto.png")  # -> the number of points drawn
    plot_frontier(build_frontier(read_runs(mini=True)), "results/leaderboard-mini-frontier.png")
"""

from __future__ import annotations

import math
from pathlib import Path

from adapters.api.errors import InputError
from harness.leaderboard.choice import reference_like
from harness.leaderboard.frontier import NO_POINTS, groups, measured_against, timed_on
from harness.results import atomic_write


def pareto_points(board: list[dict]) -> list[dict]:
    """Points of the Pareto plot: FID against generator-only ms per image.

    Each point is the fastest batch size of one (model, source, nfe, device, device_name,
    backend, dtype, compiled, options). Kinds: ``paper`` (both figures published),
    ``measured`` (both measured here with real weights, for the same setting),
    ``measured-time`` (measured timing, the paper's FID for the same model id and NFE, or any
    NFE where the paper prints none, as for autoregressive flows: random-weight runs time the
    architecture, not its quality); only for a timing that is its own reference or verified
    (`reference_like`), since a fast setting (bf16, Jacobi decoding) need not keep the paper's FID.
    """
    paper_fid = {(e["model"], e["nfe"]): e["fid"] for e in board if e["source"] == "paper" and e["fid"] is not None}
    # Autoregressive rows print no NFE: their paper FID pairs with a measured row of any NFE.
    paper_fid_any_nfe = {m: f for (m, nfe), f in paper_fid.items() if nfe == ""}
    best: dict[tuple, dict] = {}
    for e in board:
        if e["ms_per_image"] is None:
            continue
        if e["fid"] is not None:
            fid, kind = e["fid"], ("paper" if e["source"] == "paper" else "measured")
        elif e["source"] == "measured" and reference_like(e) and (e["model"], e["nfe"]) in paper_fid:
            fid, kind = paper_fid[(e["model"], e["nfe"])], "measured-time"
        elif e["source"] == "measured" and reference_like(e) and e["model"] in paper_fid_any_nfe:
            fid, kind = paper_fid_any_nfe[e["model"]], "measured-time"
        else:
            continue
        k = (e["model"], e["source"], e["nfe"], e["device"], e["device_name"], e["backend"], e["dtype"], e["compiled"],
             e["options"])
        point = {"model": e["model"], "family": e["family"], "device": e["device"] or "?",
                 "batch_size": e["batch_size"], "ms": e["ms_per_image"], "fid": fid, "kind": kind}
        if k not in best or point["ms"] < best[k]["ms"]:
            best[k] = point
    return [best[k] for k in sorted(best)]


def pareto_front(points: list[dict]) -> list[dict]:
    """Points (``ms``, ``fid``) no other point beats on both time and FID, fastest first; values
    only, no intervals (the plot's dashed line)."""
    front: list[dict] = []
    for p in sorted(points, key=lambda p: (p["ms"], p["fid"])):
        if not front or p["fid"] < front[-1]["fid"]:
            front.append(p)
    return front


def plot_pareto(board: list[dict], path: str | Path) -> int:
    """Draw `pareto.png`: published points hollow, measured filled, measured timing with a
    paper FID half-filled; returns the number of points. Needs matplotlib."""
    plt = _pyplot()
    points = pareto_points(board)
    families = sorted({p["family"] for p in points})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    style = {"paper": ("none", "paper: time and FID"), "measured": ("full", "measured: time and FID"),
             "measured-time": ("left", "measured time (reference or verified setting), paper FID")}
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    for p in points:
        fill, _ = style[p["kind"]]
        ax.plot(p["ms"], p["fid"], marker="o", markersize=9, linestyle="none", color=colours[p["family"]],
                fillstyle=fill, markeredgewidth=1.5)
        label = f"{p['model']} ({p['device']}" + (f", b{p['batch_size']}" if p["batch_size"] else "") + ")"
        ax.annotate(label, (p["ms"], p["fid"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    frontier = pareto_front(points)
    if len(frontier) > 1:
        ax.step([p["ms"] for p in frontier], [p["fid"] for p in frontier], where="post", color="0.6",
                linestyle="--", linewidth=1, label="Pareto front (all points)")
    for kind, (fill, name) in style.items():  # legend entries for marker fill, in grey
        ax.plot([], [], marker="o", linestyle="none", color="0.3", fillstyle=fill, markersize=9, label=name)
    for f in families:
        ax.plot([], [], marker="s", linestyle="none", color=colours[f], label=f)
    ax.set_xscale("log")
    ax.set_xlabel("generator ms per image (log scale; decode excluded)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title("nfebench: quality against speed, class-conditional ImageNet 256x256")
    ax.grid(True, which="both", alpha=0.3)
    if points:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no rows with both a FID and a generator time", transform=ax.transAxes, ha="center")
    _save(plt, fig, path)
    return len(points)


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display); an InputError naming the fix without it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise InputError("the plots need matplotlib: pip install matplotlib (or pass --no-plot)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: str | Path) -> None:
    """The figure as PNG bytes without the Software stamp (a matplotlib version is not an input), atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def _error(e: dict, col: str) -> tuple[float, float]:
    """Distances below and above a value to its interval's bounds (0 without an interval)."""
    low, high = e[f"{col}_ci_low"], e[f"{col}_ci_high"]
    return (0.0, 0.0) if low is None or high is None else (e[col] - low, high - e[col])


def plot_frontier(points: list[dict], path: str | Path, title: str = "nfebench: quality against latency") -> int:
    """Draw the frontier plot: one panel per frontier (metric, what the quality was measured
    against, where it was timed), quality against ms per image on a log axis, 95% intervals as
    error bars on both axes, frontier points ringed and joined fastest first. Each point carries
    a number and the key under its panel names its model and setting (close settings, such as
    one model's decodings, would print their names over each other). Returns the number of
    panels. Needs matplotlib."""
    plt = _pyplot()
    panels = list(groups(points).values())
    models = sorted({p["model"] for p in points})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    cols = min(3, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / cols))
    longest = max((len(m) for m in panels), default=0)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, (4.2 + 0.13 * longest) * nrows), dpi=110,
                             squeeze=False, layout="constrained")
    for ax, members in zip(axes.flat, panels):
        first = members[0]
        for i, p in enumerate(members, start=1):  # fastest first (build_frontier's order)
            on = p["frontier"] == "yes"
            ax.errorbar(p["ms_per_image"], p["value"], xerr=[[v] for v in _error(p, "ms_per_image")],
                        yerr=[[v] for v in _error(p, "value")], marker="o", markersize=6, linestyle="none",
                        color=colours[p["model"]], elinewidth=1, capsize=2, markeredgecolor="black" if on else
                        colours[p["model"]], markeredgewidth=1.5 if on else 0.5,
                        label=f"{i}: {p['setting']}" + (" (frontier)" if on else ""))
            ax.annotate(str(i), (p["ms_per_image"], p["value"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
        front = sorted((p for p in members if p["frontier"] == "yes"), key=lambda p: (p["ms_per_image"], p["setting"]))
        if len(front) > 1:
            ax.plot([p["ms_per_image"] for p in front], [p["value"] for p in front], color="0.4", linestyle="--",
                    linewidth=1, label="frontier: not dominated once the intervals are read")
        ax.set_xscale("log")
        ax.set_xlabel("ms per image (log scale), 95% intervals")
        ax.set_ylabel(f"{first['metric']} ({first['better']} is better)")
        ax.set_title(f"{timed_on(None, first)}\n{measured_against(None, first)}", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if not panels:
        axes.flat[0].text(0.5, 0.5, NO_POINTS, transform=axes.flat[0].transAxes, ha="center", va="center",
                          fontsize=8, wrap=True)
    fig.suptitle(title)
    _save(plt, fig, path)
    return len(panels)
