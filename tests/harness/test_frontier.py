"""The frontier of quality against latency (issue 21): dominance only where the intervals resolve
it, the best setting within a budget at its edges, each model's optima, the budgets flag, the
frontier files of the committed record, and at most ten Markdown columns per table."""

import csv
import itertools
import random
from pathlib import Path

import pytest

from adapters.api.errors import InputError
from harness import leaderboard
from harness.cli import main
from harness.results import (
    FID,
    IS,
    MS_PER_IMAGE,
    SPEEDUP,
    atomic_write,
    rows_to_csv,
)

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "results" / "published.csv"
BASE = {"schema_version": 2, "created": "2026-12-02T10:00:00+00:00", "source": "measured", "status": "ok",
        "device": "cpu", "device_name": "Test CPU", "backend": "torch", "dtype": "float32", "compiled": "False",
        "nfebench_version": "0.1.0", "seed": 0, "family": "f", "params": 1000}
REF = {"mode": "adm", "reference": "digits-heldout-stats.npz", "reference_n": 500, "network": "inception"}


def quality(model, options, metric, value, half=None, n=200, weights=None, nfe=1, run_id="sweep", **extra):
    """A sweep's quality row of one setting (half: half-width of its 95% interval)."""
    interval = {"ci_low": value - half, "ci_high": value + half} if half is not None else {}
    return {**BASE, "run_id": run_id, "model": model, "nfe": nfe, "batch_size": 100, "decode": "on", "n": n,
            "weights": weights or f"sha256:{model}", "metric": metric, "value": value, **interval,
            "config": {**REF, "options": options, "sweep": {"id": run_id, "baseline": ""}}, **extra}


def timing(model, options, ms, half=None, bs=1, decode="on", weights=None, nfe=1, run_id="sweep", **extra):
    interval = {"ci_low": ms - half, "ci_high": ms + half} if half is not None else {}
    return {**BASE, "run_id": run_id, "model": model, "nfe": nfe, "batch_size": bs, "decode": decode, "n": 9,
            "weights": weights or f"sha256:{model}", "metric": MS_PER_IMAGE, "value": ms, **interval,
            "config": {"options": options, "sweep": {"id": run_id, "baseline": ""}}, **extra}


def sweep_rows():
    """A sweep on the mini track's models: rf-mini at 1, 2, 4 and 8 Euler steps (FID falls with the
    steps, time grows), biflow-mini over guidance (FID best at 0.5, IS best at 2), with a speed-up
    row of each setting over its model's baseline."""
    rows = []
    rf = {1: (97.0, 1.2), 2: (70.0, 2.4), 4: (52.0, 4.8), 8: (45.0, 9.6)}
    for steps, (fid, ms) in rf.items():
        o = {"num_steps": steps}
        rows += [quality("rf-mini", o, FID, fid, 3.0, nfe=steps),
                 quality("rf-mini", o, IS, 5.0 + steps / 4, 0.2, nfe=steps),
                 timing("rf-mini", o, ms, 0.05 * ms, nfe=steps)]
        if steps != 1:
            rows.append({**timing("rf-mini", o, 1.2 / ms, 0.01, nfe=steps), "metric": SPEEDUP,
                         "config": {"options": o, "teacher": "rf-mini", "teacher_options": {"num_steps": 1},
                                    "basis": "sweep baseline"}})
    bi = {0.0: (60.0, 6.0), 0.5: (50.0, 7.0), 1.0: (53.0, 8.0), 2.0: (66.0, 9.5)}
    for g, (fid, is_) in bi.items():
        o = {"guidance": g}
        rows += [quality("biflow-mini", o, FID, fid, 3.0, guidance=g), quality("biflow-mini", o, IS, is_, 0.2, guidance=g),
                 timing("biflow-mini", o, 2.0, 0.1, guidance=g)]
    return rows


def write_run(path, rows):
    atomic_write(path, rows_to_csv(rows))
    return path


def read_back(folder, rows, name="sweep-mini-cpu-x.csv"):
    write_run(folder / name, rows)
    return leaderboard.read_runs(folder, mini=leaderboard.is_mini(name))


# --- dominance on constructed points ------------------------------------------------------------------


def test_a_point_is_dominated_only_where_the_intervals_resolve_it():
    points = {
        # resolved faster than "slow" and not resolved worse (52 vs 49, half-widths 3): dominates it
        "fast": ((1.0, 0.9, 1.1), (52.0, 49.0, 55.0)),
        "slow": ((10.0, 9.0, 11.0), (49.0, 46.0, 52.0)),
        # faster and better than "near" by value, but inside both intervals: the two share the frontier
        "near": ((1.05, 0.95, 1.15), (53.0, 50.0, 56.0)),
        # as fast as "fast" within the interval, resolved worse: dominated
        "bad": ((1.02, 0.92, 1.12), (90.0, 87.0, 93.0)),
        # resolved better than every other, resolved slower than the fast ones, within "slow"'s time: on the frontier
        "best": ((10.5, 9.5, 11.5), (20.0, 19.0, 21.0)),
    }
    beaten = leaderboard.dominated_by(points)
    assert {k for k, v in beaten.items() if not v} == {"fast", "near", "best"}
    assert beaten["slow"] == ["fast", "near", "best"] and beaten["bad"] == ["fast", "near"]


def test_higher_is_better_quality_turns_the_quality_axis():
    points = {"a": ((1.0, 0.9, 1.1), (300.0, 295.0, 305.0)), "b": ((1.0, 0.9, 1.1), (250.0, 245.0, 255.0))}
    assert leaderboard.dominated_by(points, higher_is_better=True) == {"a": [], "b": ["a"]}  # IS: 300 beats 250
    assert leaderboard.dominated_by(points, higher_is_better=False) == {"a": ["b"], "b": []}  # FID: 250 beats 300
    # shared ranks turn the same way, overlapping values sharing one
    values = {"x": (300.0, 295.0, 305.0), "y": (302.0, 297.0, 307.0), "z": (250.0, 245.0, 255.0)}
    assert leaderboard.resolved_ranks(values, higher_is_better=True) == {"x": 1, "y": 1, "z": 3}
    assert leaderboard.resolved_ranks(values) == {"x": 2, "y": 2, "z": 1}
    assert leaderboard.resolved_better((300.0, 295.0, 305.0), (250.0, 245.0, 255.0), higher_is_better=True)
    assert not leaderboard.resolved_better((300.0, 295.0, 305.0), (302.0, 297.0, 307.0), higher_is_better=True)


def test_without_intervals_the_frontier_is_the_plain_pareto_set():
    rng = random.Random(3)
    for _ in range(20):
        pts = {i: ((rng.choice([1.0, 2.0, 3.0, 5.0]), None, None), (rng.choice([2.0, 3.0, 4.5]), None, None))
               for i in range(15)}
        beaten = leaderboard.dominated_by(pts)
        for k, (t, q) in pts.items():
            plain = any(t2[0] <= t[0] and q2[0] <= q[0] and (t2[0], q2[0]) != (t[0], q[0]) for t2, q2 in pts.values())
            assert bool(beaten[k]) == plain, (k, pts)
    # equal points do not dominate each other
    same = {"a": ((1.0, None, None), (2.0, None, None)), "b": ((1.0, None, None), (2.0, None, None))}
    assert leaderboard.dominated_by(same) == {"a": [], "b": []}


# --- points from run files ------------------------------------------------------------------------------


def test_points_join_quality_and_time_per_setting_and_weights(tmp_path):
    rows = sweep_rows() + [
        # quality on random weights is never a point, whatever its value
        quality("rf-mini", {"num_steps": 16}, FID, 1.0, 0.5, weights="random-init"),
        timing("rf-mini", {"num_steps": 16}, 19.2, 1.0, weights="random-init"),
        # a time of other weights joins no quality
        timing("rf-mini", {"num_steps": 8}, 0.5, 0.01, weights="sha256:other"),
        # the same model at another N makes a frontier of its own
        quality("rf-mini", {"num_steps": 1}, FID, 80.0, 1.0, n=1000),
    ]
    points = leaderboard.build_frontier(read_back(tmp_path, rows))
    fid = [p for p in points if p["metric"] == FID and p["quality_n"] == "200"]
    assert {p["setting"] for p in fid} == {f"rf-mini[num_steps={s}]" for s in (1, 2, 4, 8)} | {
        f"biflow-mini[guidance={g}]" for g in ("0.0", "0.5", "1.0", "2.0")}
    assert not any("num_steps=16" in p["setting"] for p in points)
    # the pixel models' decode-on times (no decoder in their weights) are their generator's: decode off
    assert {(p["decode"], p["batch_size"], p["device"]) for p in points} == {("off", "1", "cpu")}
    rf8 = next(p for p in fid if p["setting"] == "rf-mini[num_steps=8]")
    assert (rf8["ms_per_image"], rf8["nfe"], rf8["value_ci_low"], rf8["value_ci_high"]) == (9.6, "8", 42.0, 48.0)
    assert (rf8["speedup"], rf8["baseline"]) == (pytest.approx(0.125), "num_steps=1")
    n1000 = [p for p in points if p["quality_n"] == "1000"]
    assert [(p["setting"], p["frontier"], p["quality_rank"]) for p in n1000] == [("rf-mini[num_steps=1]", "yes", 1)]
    # FID frontier at N 200: rf-mini at 1 step (fastest), biflow-mini at guidance 0.5 (FID 50 at 2 ms) ...
    front = {p["setting"] for p in fid if p["frontier"] == "yes"}
    assert front == {"rf-mini[num_steps=1]", "biflow-mini[guidance=0.5]", "biflow-mini[guidance=1.0]",
                     "rf-mini[num_steps=8]"}
    # ... guidance 1.0 (53 +- 3) is not resolved from 0.5 (50 +- 3) at equal time: they share it; rf-mini at 4
    # steps (52 +- 3) is resolved slower than biflow-mini and not resolved better: dominated
    r4 = next(p for p in fid if p["setting"] == "rf-mini[num_steps=4]")
    assert r4["frontier"] == "no" and "biflow-mini[guidance=0.5]" in r4["dominated_by"].split("; ")
    # shared ranks (differences beyond 1.96 sqrt(2) x 3 / 1.96 = 4.24 resolved): 45 first; 50, 52 and 53 share
    # rank 2 (each resolved from 45 alone); 97 last, every other FID resolved below it
    ranks = {p["setting"]: p["quality_rank"] for p in fid}
    assert ranks["rf-mini[num_steps=8]"] == 1 and ranks["rf-mini[num_steps=1]"] == 8
    assert ranks["biflow-mini[guidance=0.5]"] == ranks["biflow-mini[guidance=1.0]"] == ranks["rf-mini[num_steps=4]"] == 2
    # IS (higher is better): biflow-mini at guidance 2 (9.5) is best and on the frontier; rf-mini at 8 steps
    # (7.0) is dominated by it, resolved better and resolved faster
    is_points = {p["setting"]: p for p in points if p["metric"] == IS}
    assert is_points["biflow-mini[guidance=2.0]"]["frontier"] == "yes"
    assert is_points["rf-mini[num_steps=8]"]["frontier"] == "no"


def test_the_gate_and_eval_rows_of_a_setting_are_points_and_dtype_is_part_of_the_setting(tmp_path):
    rows = [quality("biflow-mini", {}, FID, 51.0, 3.0, run_id="e"),  # nfebench eval: no config.options
            {**quality("biflow-mini", {}, FID, 51.1, 3.0, run_id="b"), "dtype": "bfloat16", "quality": "verified"},
            timing("biflow-mini", {}, 2.0, 0.1, decode="off", run_id="b", quality="reference"),
            {**timing("biflow-mini", {}, 3.0, 0.1, decode="off", run_id="b"), "dtype": "bfloat16", "quality": "verified"}]
    rows[0]["config"] = dict(REF)
    points = leaderboard.build_frontier(read_back(tmp_path, rows, "mini-full-x-bench.csv"))
    assert sorted((p["setting"], p["quality"], p["frontier"], p["citation"]) for p in points) == [
        ("biflow-mini", "reference", "yes", "run b; run e"), ("biflow-mini (bfloat16)", "verified", "no", "run b")]


# --- budgets ---------------------------------------------------------------------------------------------


def budget_points():
    rows = [quality("a", {}, FID, 80.0, 2.0), timing("a", {}, 2.0, 0.1),
            quality("b", {}, FID, 50.0, 2.0), timing("b", {}, 10.0, 0.5),
            quality("c", {}, FID, 51.0, 2.0), timing("c", {}, 5.0, 0.2),
            quality("d", {}, FID, 30.0, 2.0), timing("d", {}, 200.0, 5.0)]
    return rows


def test_budget_selection_at_the_edges(tmp_path):
    points = leaderboard.build_frontier(read_back(tmp_path, budget_points()))
    rows = {r["budget_ms"]: r for r in leaderboard.build_budgets(points, (1.0, 2.0, 9.99, 10.0, 100.0, 1000.0))}
    # below every point: no setting, and the row says which is fastest
    assert rows[1.0]["setting"] is None and rows[1.0]["fits"] == 0
    assert rows[1.0]["note"] == "nothing within 1 ms per image: the fastest is a at 2.000 ms"
    # a budget exactly at a point's median time fits it
    assert (rows[2.0]["setting"], rows[2.0]["fits"], rows[2.0]["shared"]) == ("a", 1, "")
    # b (50 +- 2) and c (51 +- 2) lie within one another's interval: the better value leads, the other shares
    assert (rows[9.99]["setting"], rows[9.99]["shared"]) == ("c", "")  # b's 10 ms does not fit 9.99
    assert (rows[10.0]["setting"], rows[10.0]["shared"], rows[10.0]["fits"]) == ("b", "c", 3)
    assert (rows[10.0]["value"], rows[10.0]["value_ci_low"], rows[10.0]["ms_per_image_ci_high"]) == (50.0, 48.0, 10.5)
    assert (rows[1000.0]["setting"], rows[1000.0]["shared"]) == ("d", "")  # 30 is resolved from 50
    md = leaderboard.BUDGETS_TABLE.to_markdown(list(rows.values()))
    assert "| 10 | b | 1 | fid 50.00 [48.00, 52.00] | 10.000 [9.500, 10.500] | c |" in md


def test_higher_is_better_budgets_and_the_optima_side_by_side(tmp_path):
    points = leaderboard.build_frontier(read_back(tmp_path, sweep_rows()))
    budget = {(r["metric"], r["budget_ms"]): r for r in leaderboard.build_budgets(points, (2.0, 100.0))}
    assert budget[(IS, 2.0)]["setting"] == "biflow-mini[guidance=2.0]"  # IS 9.5 +- 0.2 beats every other
    assert budget[(FID, 2.0)]["setting"] == "biflow-mini[guidance=0.5]"
    assert budget[(FID, 2.0)]["shared"] == "biflow-mini[guidance=1.0]"  # 53 +- 3 against 50 +- 3
    assert (budget[(FID, 100.0)]["setting"], budget[(FID, 100.0)]["shared"]) == ("rf-mini[num_steps=8]", "")  # 45
    optima = {(r["model"], r["optimises"]): r for r in leaderboard.build_optima(points)}
    assert set(optima) == {("biflow-mini", FID), ("biflow-mini", IS), ("rf-mini", FID), ("rf-mini", IS)}  # no KID
    f, i = optima[("biflow-mini", FID)], optima[("biflow-mini", IS)]
    # the FID-optimal guidance is not the IS-optimal one, and each row says what it costs in the other
    assert (f["setting"], f["fid"], f["is"], f["shared"]) == ("biflow-mini[guidance=0.5]", 50.0, 7.0, "[guidance=1.0]")
    assert (i["setting"], i["fid"], i["is"], i["shared"]) == ("biflow-mini[guidance=2.0]", 66.0, 9.5, "")
    assert f["kid"] is None and f["ms_per_image"] == 2.0
    md = leaderboard.OPTIMA_TABLE.to_markdown(list(optima.values()))
    assert "| biflow-mini | is | biflow-mini[guidance=2.0] |  | 66.00 [63.00, 69.00] |  | 9.5 [9.3, 9.7] |" in md


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "", "1,,10", "inf", "nan", "1,0"])
def test_a_budget_that_is_not_positive_exits_2_and_writes_nothing(tmp_path, capsys, bad):
    out = tmp_path / "out"
    assert main(["leaderboard", "--published", str(PUBLISHED), "--runs", str(tmp_path / "none"), "--out", str(out),
                 "--no-plot", "--budgets", bad]) == 2
    assert "--budgets" in capsys.readouterr().err and not out.exists()
    with pytest.raises(InputError, match="positive number"):
        leaderboard.write_leaderboard(PUBLISHED, tmp_path / "none", out, plot=False, budgets=[0.0])
    assert not out.exists()


def test_the_budgets_flag_sets_the_rows(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "sweep-x.csv", budget_points())
    out = tmp_path / "out"
    assert main(["leaderboard", "--published", str(PUBLISHED), "--runs", str(runs), "--out", str(out), "--no-plot",
                 "--budgets", "3,0.5"]) == 0
    rows = list(csv.DictReader(open(out / "leaderboard-budgets.csv", newline="")))
    assert [(r["budget_ms"], r["setting"]) for r in rows] == [("0.5", ""), ("3", "a")]
    assert list(rows[0]) == list(leaderboard.BUDGET_COLUMNS)


# --- files, plots and readable tables -----------------------------------------------------------------


def test_the_frontier_files_are_written_beside_each_board_and_say_when_they_are_empty(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "sweep-main-cpu-x.csv", budget_points())
    write_run(runs / "sweep-mini-cpu-x.csv", sweep_rows())
    paths = leaderboard.write_leaderboard(PUBLISHED, runs, tmp_path / "out", plot=False)
    main_points = list(csv.DictReader(open(paths["frontier_csv"], newline="")))
    mini_points = list(csv.DictReader(open(paths["mini_frontier_csv"], newline="")))
    assert {r["model"] for r in main_points} == {"a", "b", "c", "d"}
    assert {r["model"] for r in mini_points} == {"rf-mini", "biflow-mini"}  # the mini track's stay apart
    assert paths["mini_optima_md"].name == "leaderboard-mini-optima.md"
    empty = leaderboard.write_leaderboard(PUBLISHED, tmp_path / "none", tmp_path / "empty", plot=False)
    assert empty["frontier_csv"].read_text() == ",".join(leaderboard.FRONTIER_COLUMNS) + "\n"
    assert "No points" in empty["frontier_md"].read_text() and "mini_frontier_csv" not in empty


def test_the_frontier_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="the frontier plot needs matplotlib")
    points = leaderboard.build_frontier(read_back(tmp_path, sweep_rows()))
    out = tmp_path / "frontier.png"
    assert leaderboard.plot_frontier(points, out) == 2  # FID and IS, both at cpu b1
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    leaderboard.plot_frontier(points, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == data  # deterministic for one matplotlib
    assert leaderboard.plot_frontier([], tmp_path / "none.png") == 0 and (tmp_path / "none.png").stat().st_size > 0


def test_every_markdown_table_has_at_most_ten_columns_and_every_csv_column():
    for table in leaderboard.TABLES:
        shown = table.shown()
        assert len(shown) <= leaderboard.MAX_MARKDOWN_COLUMNS, (table.stem, len(shown))
        assert all(c in table.columns or c in table.cells for c in shown), table.stem
    committed = sorted((REPO / "results").glob("leaderboard*.md"))
    assert {p.name for p in committed} >= {f"leaderboard{m}{t}.md" for m, t in itertools.product(
        ("", "-mini"), ("", "-frontier", "-budgets", "-optima"))}
    for path in committed:
        header = path.read_text().splitlines()[0]
        assert header.count(" | ") + 1 <= leaderboard.MAX_MARKDOWN_COLUMNS, path.name


def test_the_committed_frontier_files_regenerate_byte_for_byte(tmp_path):
    paths = leaderboard.write_leaderboard(REPO / "results" / "published.csv", REPO / "results" / "runs", tmp_path,
                                          plot=False)
    frontier = {k for k in paths if any(w in k for w in ("frontier", "budgets", "optima"))}
    assert frontier == {f"{m}{t}_{ext}" for m in ("", "mini_") for t in ("frontier", "budgets", "optima")
                        for ext in ("csv", "md")}
    for key in sorted(frontier):
        assert paths[key].read_bytes() == (REPO / "results" / paths[key].name).read_bytes(), paths[key].name
