"""The generated blocks: each renderer turns the committed record into one Markdown table (with a
sentence or two of what it shows), and keeps every number it prints as a `Fact`.

Tables stay readable: at most about ten columns, each interval in its value's cell
(``336 [327, 341]``). `BLOCKS` names the renderers a page can ask for.

Example::

    block = mini_models(Record(Path(".")))
    print(block.text)                 # the mini track's models: FIDs and ms per image
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from adapters.api.errors import InputError
from harness.docs.record import Fact, Record, as_number
from harness.results import read_run


def decimals_for(value: float) -> int:
    """Decimals that show a measured value to about three significant digits (10272, 336, 22.4, 2.16)."""
    a = abs(value)
    return 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3


@dataclass
class Table:
    """A Markdown table being built; every number put in it through `num` is kept as a `Fact`."""

    headers: tuple[str, ...]
    right: tuple[bool, ...] = ()
    rows: list[list[str]] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)

    def num(self, value: float | None, kind: str, decimals: int | None = None, lo: float | None = None,
            hi: float | None = None, unit: str = "") -> str:
        """`value` and its `unit` (with its interval when given) at `decimals` (default: `decimals_for`)."""
        if value is None or not math.isfinite(value):
            return ""
        d = decimals_for(value) if decimals is None else decimals
        self.facts += [Fact(kind, v) for v in (value, lo, hi) if v is not None and math.isfinite(v)]
        text = f"{value:.{d}f}{unit}"
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            text += f" [{lo:.{d}f}, {hi:.{d}f}]"
        return text

    def markdown(self) -> str:
        right = self.right or (False,) * len(self.headers)
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Block:
    """What a renderer returns: the block's Markdown and the numbers it prints."""

    text: str
    facts: list[Fact]


def _cell(r: dict, key: str) -> float | None:
    return as_number(r.get(key, ""))


def _interval(t: Table, r: dict, key: str, kind: str, decimals: int | None = None, unit: str = "") -> str:
    return t.num(_cell(r, key), kind, decimals, _cell(r, f"{key}_ci_low"), _cell(r, f"{key}_ci_high"), unit)


def _options(options: str, default: str = "defaults") -> str:
    """Sampler options as a table shows them: code that can wrap after each comma."""
    return f"`{options.replace(',', ', ')}`" if options else default


# ---- the main job (`tox -e bench`, the cpu preset) ------------------------------------------------------


def _bench(record: Record):
    path = record.bench_run("cpu")
    df = read_run(path)
    df = df[df.status == "ok"]
    df = df.assign(cfg=[json.loads(c) if c else {} for c in df.config])
    return path, df


def _run_minutes(path: Path) -> float | None:
    """Minutes from the opening to the closing calibration of a run (its pyperf file's uptimes)."""
    pyperf = path.with_suffix(".pyperf.json")
    if not pyperf.is_file():
        return None
    uptimes = {b["metadata"]["name"]: b["metadata"].get("uptime") for b in json.loads(pyperf.read_text())["benchmarks"]}
    start, end = uptimes.get("calibration/start"), uptimes.get("calibration/end")
    return None if start is None or end is None else (end - start) / 60


def main_job_timings(record: Record) -> Block:
    """ms per image of every model of the main job, generator only at each batch size and with the
    SD-VAE decode, with each point's share of the run's own matmul peak."""
    path, df = _bench(record)
    timed = df[(df.metric == "ms_per_image") & (df.decode != "only")]  # decoder-alone rows are the decoders'
    off_bs = sorted({int(b) for b in timed[timed.decode == "off"].batch_size})
    on_bs = sorted({int(b) for b in timed[timed.decode == "on"].batch_size})
    t = Table(("model", *[f"batch {b}" for b in off_bs], *[f"batch {b} + decode" for b in on_bs], "GFLOP / image",
               *[f"peak share, batch {b}" for b in off_bs]), (False,) + (True,) * (len(off_bs) * 2 + len(on_bs) + 1))
    point = {(r["model"], r["metric"], r["decode"], int(r["batch_size"])): r for r in df.to_dict("records")
             if r["batch_size"] != ""}

    def ms(model: str, decode: str, b: int) -> str:
        r = point.get((model, "ms_per_image", decode, b))
        return "" if r is None else t.num(r["value"], "ms", None, r["ci_low"], r["ci_high"])

    for model in dict.fromkeys(timed.model):
        share = [point.get((model, "frac_matmul_peak", "off", b)) for b in off_bs]
        flops = next((r["cfg"]["flops_per_batch"] / b for r, b in zip(share, off_bs) if r is not None), None)
        t.rows.append([f"`{model}`", *[ms(model, "off", b) for b in off_bs], *[ms(model, "on", b) for b in on_bs],
                       t.num(None if flops is None else flops / 1e9, "gflop", 1),
                       *["" if r is None else t.num(r["value"] * 100, "percent", 0, unit="%") for r in share]])
    decoders = df[(df.decode == "only") & (df.metric == "ms_per_image")].to_dict("records")
    calib = {r["cfg"].get("when"): r for r in df[df.metric == "calibration_ms"].to_dict("records")}
    peak = calib.get("start", {}).get("cfg", {}).get("peak_flop_per_s")
    minutes = _run_minutes(path)
    first = df.iloc[0]
    head = (f"Run file `results/runs/{path.name}`: {first['device_name']} ({first['device']}, {first['backend']}, "
            f"{first['dtype']}), started {first['created']}"
            + ("" if minutes is None else f", {t.num(minutes, 'min', 1)} min from its opening to its closing "
                                          "calibration") + ". ms per image, median [95% interval], of the generator "
            "alone and with the SD-VAE decode, and the generator's share of the run's matmul peak.")
    table = t.markdown()
    notes = []
    for v in decoders:  # one per decoder (the SD-VAE's `sd-vae`, FACM's `va-vae`) and batch size
        name = "SD-VAE" if v["model"] == "sd-vae" else f"`{v['model']}`"
        notes.append(f"The {name} decode alone: {t.num(v['value'], 'ms', None, v['ci_low'], v['ci_high'])} "
                     f"ms per image at batch {v['batch_size']}.")
    if peak:
        notes.append(f"The run's matmul peak (its opening calibration's fastest call): "
                     f"{t.num(peak / 1e9, 'gflops', 0)} GFLOP/s; calibration "
                     + ", ".join(f"{t.num(calib[w]['value'], 'ms', 1)} ms at the {w}" for w in ("start", "end")
                                 if w in calib) + ".")
    return Block("\n\n".join([head, table, " ".join(notes)]).strip(), t.facts)


def main_job_speedups(record: Record) -> Block:
    """Each fast model over its teacher in the main job: the paired speed-ups with their intervals,
    and the ratio of the two compute floors (FLOPs per image) the speed-up tends to."""
    path, df = _bench(record)
    flops = {(r["model"], r["decode"]): r["cfg"]["flops_per_batch"] / int(r["batch_size"])
             for r in df[df.metric == "frac_matmul_peak"].to_dict("records") if "flops_per_batch" in r["cfg"]}
    t = Table(("model", "over", "batch", "decode", "speed-up [95%]", "rounds", "pairing", "stable",
               "compute-floor ratio"), (False, False, True, False, True, True, False, False, True))
    for r in df[df.metric == "speedup"].to_dict("records"):
        c = r["cfg"]
        batch = r["batch_size"] or f"best throughput ({c.get('batch_size')} / {c.get('teacher_batch_size')})"
        f_fast, f_teacher = flops.get((r["model"], r["decode"])), flops.get((c["teacher"], r["decode"]))
        ratio = None if not f_fast or not f_teacher else f_teacher / f_fast
        t.rows.append([f"`{r['model']}`", f"`{c['teacher']}`", str(batch), r["decode"],
                       t.num(r["value"], "ratio", 1, r["ci_low"], r["ci_high"], "x"), str(r["n"]),
                       c.get("pairing", ""), "yes" if r["stable"] == "True" else "no", t.num(ratio, "ratio", 1, unit="x")])
    head = (f"Speed-ups of `results/runs/{path.name}`, timed in alternating rounds (a best-throughput row pairs "
            f"each model at its own best batch size, unpaired); the compute-floor ratio is the teacher's FLOPs per "
            f"image over the fast model's.")
    return Block(f"{head}\n\n{t.markdown()}", t.facts)


# ---- the mini track -----------------------------------------------------------------------------------


def _mini(record: Record, name: str = "leaderboard-mini.csv") -> tuple[str, list[dict]]:
    """The latest full track run's rows of a mini table."""
    manifest, _ = record.track_manifest()
    run = manifest.stem
    rows = [r for r in record.csv(name).to_dict("records") if r["track_run"] == run]
    if not rows:
        raise InputError(f"results/{name} has no rows of the track run {run}: run `nfebench leaderboard`")
    return run, rows


def mini_models(record: Record) -> Block:
    """The mini track's models at their default options: FIDs trained, half-way and random, and times."""
    run, rows = _mini(record)
    _, manifest = record.track_manifest()
    rows = [r for r in rows if r["options"] == ""]
    batched = rows[0]["batch_size"]
    t = Table(("model", "dtype", "steps", "FID [95%]", "FID half-way", "FID random", "precision / recall",
               "ms, batch 1", f"ms, batch {batched}"), (False, False) + (True,) * 7)
    for r in rows:
        pr = f"{t.num(_cell(r, 'precision'), 'quality', 3)} / {t.num(_cell(r, 'recall'), 'quality', 3)}"
        pr = pr if r["precision"] else ""
        t.rows.append([f"`{r['model']}`", r["dtype"], r["train_steps"], _interval(t, r, "fid", "quality", 1),
                       t.num(_cell(r, "fid_half_steps"), "quality", 1), t.num(_cell(r, "fid_random"), "quality", 1),
                       pr, _interval(t, r, "ms_per_image", "ms"), _interval(t, r, "ms_per_image_batched", "ms")])
    minutes = t.num(float(manifest["wall_seconds"]) / 60, "min", 1)
    head = (f"Track run `{run}` (`results/leaderboard-mini.csv`; {minutes} min wall time): FID at N = "
            f"{rows[0]['quality_n']} against the held-out digits (`{rows[0]['fid_reference']}`), comparable only "
            f"within this table; generator-only ms per image, median [95% interval]. Half-way and random-weight "
            f"FIDs and precision / recall are measured at float32.")
    return Block(f"{head}\n\n{t.markdown()}", t.facts)


def mini_decodings(record: Record) -> Block:
    """The mini teacher at each decoding it was timed at: FID, ms per image and decoding passes at both
    batch sizes, and each decoding's speed relative to sequential decoding."""
    run, rows = _mini(record)
    teachers = {r["teacher"] for r in _mini(record, "leaderboard-mini-speedup.csv")[1]}
    rows = [r for r in rows if r["model"] in teachers and r["dtype"] == "float32"]
    seq = next(r for r in rows if r["options"] == "")
    batched = seq["batch_size"]
    t = Table(("decoding", "quality", "FID [95%]", "ms, batch 1", "passes", f"ms, batch {batched}", "passes",
               "speed vs sequential, batch 1", f"batch {batched}"), (False, False) + (True,) * 7)

    def passes(r: dict, suffix: str = "") -> str:
        mean, most = _cell(r, f"iterations_mean{suffix}"), _cell(r, f"iterations_max{suffix}")
        return "" if mean is None else f"{mean:g} / {most:g}"

    for r in sorted(rows, key=lambda r: (r["options"] != "", r["options"])):
        speed = [_cell(seq, k) / _cell(r, k) for k in ("ms_per_image", "ms_per_image_batched")]
        t.rows.append([_options(r["options"], "sequential"), r["quality"],
                       _interval(t, r, "fid", "quality", 2), _interval(t, r, "ms_per_image", "ms"), passes(r),
                       _interval(t, r, "ms_per_image_batched", "ms"), passes(r, "_batched"),
                       t.num(speed[0], "ratio", 2, unit="x"), t.num(speed[1], "ratio", 2, unit="x")])
    ok = [r for r in rows if r["quality"] in ("verified", "reference")]
    best = [min(ok, key=lambda r: _cell(r, k)) for k in ("ms_per_image", "ms_per_image_batched")]
    head = (f"`{seq['model']}` of track run `{run}` (`results/leaderboard-mini.csv`), float32; passes are the mean / "
            f"largest per flow block of the timed batch (sequential decoding: tokens - 1). Fastest setting whose "
            f"quality is verified: {_options(best[0]['options'], 'sequential decoding')} at batch 1, "
            f"{_options(best[1]['options'], 'sequential decoding')} at batch {batched}.")
    return Block(f"{head}\n\n{t.markdown()}", t.facts)


def mini_speedups(record: Record) -> Block:
    """The mini student over its teacher: at the teacher's exact decoding and at its fastest verified one."""
    run, rows = _mini(record, "leaderboard-mini-speedup.csv")
    t = Table(("dtype", "batch", "over the teacher at", "teacher setting", "speed-up [95%]", "student ms",
               "teacher ms", "FID student / teacher"), (False, True, False, False, True, True, True, True))
    for r in rows:
        fids = f"{t.num(_cell(r, 'fid'), 'quality', 2)} / {t.num(_cell(r, 'teacher_fid'), 'quality', 2)}"
        t.rows.append([r["dtype"], r["batch_size"], r["basis"], _options(r["teacher_options"], "sequential"),
                       _interval(t, r, "speedup", "ratio", 1, "x"), t.num(_cell(r, "ms_per_image"), "ms"),
                       t.num(_cell(r, "teacher_ms_per_image"), "ms"), fids])
    head = (f"`{rows[0]['model']}` over `{rows[0]['teacher']}` in track run `{run}` "
            f"(`results/leaderboard-mini-speedup.csv`), timed in alternating rounds.")
    return Block(f"{head}\n\n{t.markdown()}", t.facts)


def gs_jacobi_plan(record: Record) -> Block:
    """The GS-Jacobi plan the committed mini track chose: each block's CRM and IGMs, its segments and start."""
    path, manifest = record.track_manifest()
    plan = manifest.get("gs_jacobi")
    if not plan:
        raise InputError(f"{path} records no GS-Jacobi plan")
    options = plan["options"]
    t = Table(("block", "CRM", "IGM from noise", "IGM from zeros", "segments", "initial guess"),
              (True, True, True, True, True, False))
    for b, crm in enumerate(plan["crm"]):
        igm = plan["igm"][b]
        t.rows.append([str(b), t.num(crm, "crm", 1), t.num(igm["noise"], "igm", 1), t.num(igm["zeros"], "igm", 1),
                       str(options["gs_segments"][b]), options["jacobi_init"][b]])
    median = statistics.median(plan["crm"])
    head = (f"Track run `{path.stem}` (`results/runs/{path.name}`, `gs_jacobi`): {plan['source']}; median CRM "
            f"{t.num(median, 'crm', 1)}, block 0 is decoded last.")
    return Block(f"{head}\n\n{t.markdown()}", t.facts)


BLOCKS: dict[str, Callable[[Record], Block]] = {
    "main-job-timings": main_job_timings,
    "main-job-speedups": main_job_speedups,
    "mini-models": mini_models,
    "mini-decodings": mini_decodings,
    "mini-speedups": mini_speedups,
    "gs-jacobi-plan": gs_jacobi_plan,
}
