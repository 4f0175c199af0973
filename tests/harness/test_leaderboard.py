import csv
import io
import json
import random
from pathlib import Path

import pytest

from adapters.api.errors import InputError
from harness import leaderboard
from harness.cli import main
from harness.results import FID, IS, MS_PER_IMAGE, atomic_write, rows_to_csv

REPO = Path(__file__).resolve().parents[2]

PAPER = {"schema_version": 1, "run_id": "published", "source": "paper", "status": "ok", "weights": "paper",
         "n": 50000, "evidence": "secondary", "citation": "arXiv 2512.10953"}
MEASURED = {"schema_version": 1, "source": "measured", "status": "ok", "device": "cpu", "device_name": "Test CPU",
            "backend": "torch", "dtype": "float32", "compiled": "none", "n": 10, "nfebench_version": "0.1.0"}


def published_rows():
    bi = {**PAPER, "model": "biflow-b2", "family": "biflow", "params": 133_000_000, "nfe": 1}
    it = {**PAPER, "model": "itarflow-b2", "family": "tarflow", "params": 120_000_000}
    mf = {**PAPER, "model": "meanflow-b2", "family": "meanflow", "params": 131_000_000, "nfe": 1,
          "evidence": "verified", "citation": "arXiv 2505.13447 Table 2"}
    tpu = {"device": "tpu", "metric": MS_PER_IMAGE}
    return [
        {**bi, "metric": FID, "value": 2.39}, {**bi, "metric": IS, "value": 303.0},
        {**bi, **tpu, "decode": "off", "value": 0.29}, {**bi, **tpu, "decode": "on", "value": 1.59},
        {**it, "metric": FID, "value": 6.83}, {**it, **tpu, "decode": "off", "value": 65.0},
        {**it, **tpu, "decode": "on", "value": 66.3}, {**mf, "metric": FID, "value": 6.17},
    ]


def bench_run(run_id, created, biflow_ms=40.0, weights="random-init", spread=0.1):
    """A measured timing run (schema 1: a spread, no interval) of biflow-b2, its teacher and
    meanflow-b2 at batch sizes 1 and 4."""
    rows = [{**MEASURED, "run_id": run_id, "created": created, "model": "calibration", "metric": "calibration_ms",
             "value": 100.0}]
    for model, family, nfe, ms in (("biflow-b2", "biflow", 1, biflow_ms), ("itarflow-b2", "tarflow", 2, 4000.0),
                                   ("meanflow-b2", "meanflow", 1, 35.0)):
        for bs in (1, 4):
            for decode, extra in (("off", 0.0), ("on", 500.0)):
                rows.append({**MEASURED, "run_id": run_id, "created": created, "model": model, "family": family,
                             "params": 1000, "nfe": nfe, "batch_size": bs, "decode": decode, "weights": weights,
                             "metric": MS_PER_IMAGE, "value": (ms + extra) / bs, "spread": spread})
    rows.append({**MEASURED, "run_id": run_id, "created": created, "model": "meanflow-b2", "nfe": 1,
                 "batch_size": 8, "decode": "off", "metric": MS_PER_IMAGE, "status": "oom", "weights": weights})
    # bench times the SD-VAE decoder alone as model "sd-vae", decode "only": not a generator row.
    rows.append({**MEASURED, "run_id": run_id, "created": created, "model": "sd-vae", "family": "sd-vae", "nfe": 1,
                 "batch_size": 1, "decode": "only", "metric": MS_PER_IMAGE, "value": 500.0, "weights": weights})
    return rows


def eval_run(run_id, fid, weights, model="meanflow-b2", n=1000, created="2026-11-25T10:00:00+00:00"):
    q = {**MEASURED, "run_id": run_id, "created": created, "model": model, "family": "meanflow", "nfe": 1,
         "batch_size": 16, "decode": "on", "n": n, "weights": weights, "config": {"mode": "adm"}}
    return [{**q, "metric": FID, "value": fid}, {**q, "metric": IS, "value": 100.0 + fid}]


def write_csv(path, rows, extra_columns=()):
    text = rows_to_csv(rows)
    if extra_columns:  # published.csv: the schema plus `evidence`
        buf = io.StringIO()
        reader = csv.DictReader(io.StringIO(text))
        w = csv.DictWriter(buf, fieldnames=list(reader.fieldnames) + list(extra_columns), lineterminator="\n")
        w.writeheader()
        for row, src in zip(reader, rows):
            w.writerow({**row, **{c: src.get(c, "") for c in extra_columns}})
        text = buf.getvalue()
    atomic_write(path, text)
    return path


@pytest.fixture
def inputs(tmp_path):
    published = write_csv(tmp_path / "published.csv", published_rows(), ("evidence",))
    runs = tmp_path / "runs"
    # the older run was measured on a quiet machine, the newer one on a noisy one
    write_csv(runs / "bench-old.csv", bench_run("old", "2026-11-24T10:00:00+00:00", biflow_ms=80.0))
    write_csv(runs / "bench-new.csv", bench_run("new", "2026-11-25T10:00:00+00:00", spread=10.0))
    write_csv(runs / "eval" / "random.csv", eval_run("rnd", 0.5, "random-init+vae:sha256:ab"))
    write_csv(runs / "eval" / "trained.csv", eval_run("trained", 6.5, "sha256:cd+vae:sha256:ab"))
    write_csv(runs / "eval" / "small.csv", eval_run("small", 9.0, "sha256:cd+vae:sha256:ab", n=100,
                                                    created="2026-11-26T10:00:00+00:00"))
    return published, runs


def board_rows(csv_path):
    return list(csv.DictReader(open(csv_path, newline="")))


def test_random_weight_rows_never_enter_quality_ranks(inputs, tmp_path):
    published, runs = inputs
    paths = leaderboard.write_leaderboard(published, runs, tmp_path / "out", plot=False)
    rows = board_rows(paths["csv"])
    # FID 0.5 from random weights would rank first; it appears nowhere.
    assert "0.50" not in {r["fid"] for r in rows} and "100.5" not in {r["is"] for r in rows}
    measured = [r for r in rows if r["model"] == "meanflow-b2" and r["source"] == "measured"]
    # The trained-weight FID (n=1000 beats the newer n=100 run) sits on every measured meanflow setting ...
    assert {(r["fid"], r["is"], r["quality_n"], r["fid_reference"]) for r in measured} == {
        ("6.50", "106.5", "1000", "adm")}
    # ... and the random-init timing rows still give their timings.
    assert {(r["batch_size"], r["ms_per_image"], r["ms_per_image_decode"]) for r in measured} == {
        ("1", "35.000", "535.000"), ("4", "8.750", "133.750")}
    ranked = sorted({(r["source"], int(r["fid_rank"]), r["model"], r["fid"]) for r in rows if r["fid_rank"]})
    # FIDs rank only against FIDs of equal N and reference: FID-50K of the papers apart from the measured N = 1000
    assert ranked == [("measured", 1, "meanflow-b2", "6.50"), ("paper", 1, "biflow-b2", "2.39"),
                      ("paper", 2, "meanflow-b2", "6.17"), ("paper", 3, "itarflow-b2", "6.83")]
    unranked = {r["model"] for r in rows if not r["fid_rank"]}
    assert unranked == {"biflow-b2", "itarflow-b2"}  # measured with random weights only: timings, no rank
    # group by group (most samples first), by rank; unranked last
    assert [(r["source"], r["fid_rank"]) for r in rows] == [("paper", "1"), ("paper", "2"), ("paper", "3"),
                                                            ("measured", "1"), ("measured", "1")] + [("measured", "")] * 4


def test_the_narrowest_interval_wins_not_the_latest_run_and_teacher_speedup(inputs, tmp_path):
    published, runs = inputs
    rows = board_rows(leaderboard.write_leaderboard(published, runs, tmp_path, plot=False)["csv"])
    bi = {(r["source"], r["batch_size"]): r for r in rows if r["model"] == "biflow-b2"}
    assert bi[("measured", "1")]["ms_per_image"] == "80.000"  # the quiet 2026-11-24 run, not the newer noisy one
    assert (bi[("measured", "1")]["teacher"], bi[("measured", "1")]["speedup"]) == ("itarflow-b2", "50.0")
    assert bi[("measured", "1")]["speedup_decode"] == f"{4500 / 580:.1f}"
    assert bi[("measured", "1")]["speedup_ci_low"] == ""  # schema-1 runs have no measured ratio, so no interval
    # Paper rows: the speed-ups the BiFlow paper prints (224x generator only, 42x with decode).
    paper = bi[("paper", "")]
    assert (paper["device"], paper["speedup"], paper["speedup_decode"]) == ("tpu", "224.1", "41.7")
    assert paper["citation"] == "arXiv 2512.10953" and paper["evidence"] == "secondary"
    assert not any(r["model"] in ("calibration", "sd-vae") for r in rows)
    assert {r["batch_size"] for r in rows if r["model"] == "meanflow-b2" and r["source"] == "measured"} == {"1", "4"}


def test_regeneration_is_byte_stable_whatever_the_row_order(inputs, tmp_path):
    published, runs = inputs
    first = leaderboard.write_leaderboard(published, runs, tmp_path / "a", plot=False)
    second = leaderboard.write_leaderboard(published, runs, tmp_path / "b", plot=False)
    # Shuffle the rows of every input file: the output must not change by a byte.
    shuffled = tmp_path / "shuffled"
    rng = random.Random(0)
    for src in [published, *sorted(runs.rglob("*.csv"))]:
        lines = src.read_text().splitlines(keepends=True)
        body = lines[1:]
        rng.shuffle(body)
        dst = shuffled / src.relative_to(tmp_path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(lines[0] + "".join(body))
    third = leaderboard.write_leaderboard(shuffled / "published.csv", shuffled / "runs", tmp_path / "c", plot=False)
    for kind in ("csv", "md"):
        data = first[kind].read_bytes()
        assert data == second[kind].read_bytes() == third[kind].read_bytes()
        assert b"2026-11" not in data  # no timestamps


def markdown_cells(md_text):
    """The Markdown table as its header and a dict per row (cells stripped, ``\\|`` read back as ``|``)."""
    md = md_text.splitlines()
    header = [c.strip() for c in md[0].strip("|").split(" | ")]
    return header, [dict(zip(header, (c.strip().replace("\\|", "|") for c in line.strip("|").split(" | "))))
                    for line in md[2:] if line.startswith("|")]


def with_interval(row, col, missing=""):
    low, high = row[f"{col}_ci_low"], row[f"{col}_ci_high"]
    return f"{row[col]} [{low}, {high}]" if low else row[col] + missing


def test_markdown_holds_the_csv_cells_with_intervals_beside_their_values(inputs, tmp_path):
    # ten readable columns; the CSV keeps all 32 (issue 21)
    published, runs = inputs
    paths = leaderboard.write_leaderboard(published, runs, tmp_path, plot=False)
    rows = list(csv.DictReader(open(paths["csv"], newline="")))
    assert list(rows[0]) == list(leaderboard.LEADERBOARD_COLUMNS)
    header, cells = markdown_cells(paths["md"].read_text())
    assert len(cells) == len(rows) and len(header) == 10
    assert header == ["fid_rank", "model", "params", "nfe", "setting", "fid [95%], N", "is",
                      "ms per image; decoded; device", "speed-up [95%]; decoded; over", "source"]
    for cell, row in zip(cells, rows):
        for col in ("fid_rank", "model", "params", "nfe", "is"):
            assert cell[col] == row[col], (col, cell)
        assert cell["fid [95%], N"] == (f"{with_interval(row, 'fid', ' (no interval)')}, N {row['quality_n']}"
                                        if row["fid"] else "")
        assert cell["setting"] == ", ".join(x for x in (row["options"], row["dtype"],
                                                        f"b{row['batch_size']}" if row["batch_size"] else "") if x)
        times = cell["ms per image; decoded; device"]
        if row["ms_per_image"]:
            assert times.startswith(row["ms_per_image"] + "; ") and times.endswith(row["device"] + (
                f" ({row['device_name']})" if row["device_name"] else ""))
        if row["ms_per_image_decode"]:
            assert f"decoded {row['ms_per_image_decode']}" in times
        speed = cell["speed-up [95%]; decoded; over"]
        if row["speedup"]:
            assert speed.startswith(with_interval(row, "speedup")) and speed.endswith(f"over {row['teacher']}")
        if row["speedup_decode"]:
            assert f"decoded {with_interval(row, 'speedup_decode')}" in speed
        assert cell["source"].startswith(row["source"]) and cell["source"].endswith(f": {row['citation']}")
        assert ("random weights" in cell["source"]) == (row["source"] == "measured" and "random-init" in row["weights"])


def test_pareto_points_and_plot(inputs, tmp_path):
    pytest.importorskip("matplotlib", reason="pareto.png needs matplotlib")
    published, runs = inputs
    rows = leaderboard.read_published(published) + leaderboard.read_runs(runs)
    board = leaderboard.build(rows)
    points = {(p["model"], p["kind"]): p for p in leaderboard.pareto_points(board)}
    assert set(points) == {("biflow-b2", "paper"), ("itarflow-b2", "paper"), ("meanflow-b2", "measured"),
                           ("biflow-b2", "measured-time"), ("itarflow-b2", "measured-time")}
    assert points[("biflow-b2", "measured-time")]["fid"] == 2.39  # random-init timing, the paper's FID
    assert points[("biflow-b2", "measured-time")]["ms"] == 20.0  # fastest batch size (4) of the chosen run: 80 / 4
    # The paper prints no NFE for the autoregressive teacher: its FID pairs with the measured nfe=2 row.
    assert points[("itarflow-b2", "measured-time")]["fid"] == 6.83
    assert points[("meanflow-b2", "measured")]["fid"] == 6.5
    front = leaderboard.pareto_front(list(points.values()))
    assert [(p["model"], p["kind"]) for p in front] == [("biflow-b2", "paper")]  # fastest and best
    out = tmp_path / "pareto.png"
    assert leaderboard.plot_pareto(board, out) == 5
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_cli_writes_three_files(inputs, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="pareto.png needs matplotlib")
    published, runs = inputs
    out = tmp_path / "out"
    assert main(["leaderboard", "--published", str(published), "--runs", str(runs), "--out", str(out)]) == 0
    # the board, the frontier's three tables (no points here: no trained quality joins a time) and two plots
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"leaderboard{t}.{ext}" for t in ("", "-frontier", "-budgets", "-optima") for ext in ("csv", "md")]
        + ["leaderboard-frontier.png", "pareto.png"])
    assert "wrote" in capsys.readouterr().out


def test_no_runs_folder_gives_the_published_board(tmp_path):
    published = write_csv(tmp_path / "published.csv", published_rows(), ("evidence",))
    paths = leaderboard.write_leaderboard(published, tmp_path / "absent", tmp_path, plot=False)
    assert {r["source"] for r in board_rows(paths["csv"])} == {"paper"}


@pytest.mark.parametrize("change,message", [
    ({"evidence": "maybe"}, "evidence is 'maybe'"),
    ({"source": "measured"}, "source is 'measured'"),
    ({"citation": ""}, "no citation"),
    ({"value": ""}, "numeric value"),
])
def test_bad_published_rows_are_refused(tmp_path, change, message):
    rows = published_rows()
    rows[3] = {**rows[3], **change}
    path = write_csv(tmp_path / "published.csv", rows, ("evidence",))
    with pytest.raises(InputError, match=message):
        leaderboard.read_published(path)


def test_published_file_problems_exit_2(tmp_path, capsys):
    no_evidence = write_csv(tmp_path / "a.csv", published_rows())
    dup = write_csv(tmp_path / "b.csv", published_rows() + published_rows()[:1], ("evidence",))
    for path, message in ((no_evidence, "lacks the column 'evidence'"), (dup, "already given on line 2")):
        assert main(["leaderboard", "--published", str(path), "--out", str(tmp_path / "o"), "--no-plot"]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_repository_published_csv_builds(tmp_path):
    rows = board_rows(leaderboard.write_leaderboard(REPO / "results" / "published.csv", tmp_path / "none",
                                                    tmp_path, plot=False)["csv"])
    bi = next(r for r in rows if r["model"] == "biflow-b2" and r["device"] == "tpu")
    assert (bi["fid"], bi["is"], bi["speedup"], bi["speedup_decode"]) == ("2.39", "303.0", "224.1", "41.7")
    assert (bi["quality_n"], bi["fid_reference"]) == ("50000", "adm VIRTUAL_imagenet256_labeled.npz")
    assert rows[0]["fid_rank"] == "1" and all(r["source"] == "paper" for r in rows)


def test_pareto_front_matches_brute_force():
    rng = random.Random(1)
    points = [{"ms": rng.choice([1.0, 2.0, 3.0, 5.0, 8.0]), "fid": rng.choice([2.0, 3.0, 4.5, 6.0])}
              for _ in range(40)]
    dominated = [any(q["ms"] <= p["ms"] and q["fid"] <= p["fid"] and (q["ms"], q["fid"]) != (p["ms"], p["fid"])
                     for q in points) for p in points]
    expected = sorted({(p["ms"], p["fid"]) for p, d in zip(points, dominated) if not d})
    assert [(p["ms"], p["fid"]) for p in leaderboard.pareto_front(points)] == expected


def test_numeric_setting_cells_key_alike_and_words_are_refused(tmp_path):
    # 8, 8.0 and "8" written by different tools are one batch size; a word is an error.
    assert leaderboard.text(8) == leaderboard.text(8.0) == leaderboard.text("8.0") == "8"
    assert leaderboard.text(1.5) == leaderboard.text("1.50") == "1.5" and leaderboard.text(float("nan")) == ""
    rows = bench_run("r", "2026-11-25T10:00:00+00:00")
    write_csv(tmp_path / "runs" / "a.csv", [{**r, "batch_size": 4.0} if r.get("batch_size") == 4 else r for r in rows])
    assert {r["batch_size"] for r in leaderboard.read_runs(tmp_path / "runs")} == {"", "1", "4", "8"}
    write_csv(tmp_path / "bad" / "b.csv", [{**rows[1], "batch_size": "four"}])
    with pytest.raises(InputError, match="'batch_size' holds 'four'"):
        leaderboard.read_runs(tmp_path / "bad")


def mini_runs(runs):
    """A mini track run: trained, half-way and random eval files, a bench file and the manifest."""
    base = {**MEASURED, "created": "2026-11-25T12:00:00+00:00", "batch_size": 100, "decode": "on", "n": 200,
            "config": {"mode": "adm", "reference": "digits-heldout-stats.npz"}}
    fids = {"tarflow-mini": (20.0, 25.0, 300.0), "biflow-mini": (30.0, 35.0, 280.0), "rf-mini": (60.0, 50.0, 290.0)}
    files = {"trained": [], "half": [], "random": []}
    manifest = []
    for model, triple in fids.items():
        roles = (("trained", f"sha256:{model}-t", 100), ("half", f"sha256:{model}-h", 50),
                 ("random", "random-init", None))
        for (role, weights, steps), fid in zip(roles, triple):
            q = {**base, "run_id": role, "model": model, "family": model.split("-")[0], "params": 1, "nfe": 1,
                 "weights": weights}
            files[role] += [{**q, "metric": FID, "value": fid}, {**q, "metric": "precision", "value": 0.5},
                            {**q, "metric": "recall", "value": 0.25}]
            if steps:
                manifest.append({"model": model, "role": role, "steps": steps, "weights": weights})
    for role, rows in files.items():
        write_csv(runs / f"mini-full-x-{role}.csv", rows)
    bench = [{**MEASURED, "run_id": "b", "created": "2026-11-25T12:00:00+00:00", "model": m, "family": "f",
              "params": 1, "nfe": 1, "batch_size": bs, "decode": "off", "weights": "random-init",
              "metric": MS_PER_IMAGE, "value": ms / bs}
             for m, ms in (("tarflow-mini", 640.0), ("biflow-mini", 8.0), ("rf-mini", 7.0)) for bs in (1, 64)]
    write_csv(runs / "mini-full-x-bench.csv", bench)
    atomic_write(runs / "mini-full-x.json", json.dumps({"checkpoints": manifest}))
    return fids


def test_mini_runs_make_their_own_table_and_random_weights_are_never_ranked(inputs, tmp_path):
    published, runs = inputs
    before = leaderboard.write_leaderboard(published, runs, tmp_path / "before", plot=False)
    fids = mini_runs(runs)
    paths = leaderboard.write_leaderboard(published, runs, tmp_path / "after", plot=False)
    # The main table is untouched by the mini track's files.
    assert paths["csv"].read_text() == before["csv"].read_text()
    rows = {r["model"]: r for r in board_rows(paths["mini_csv"])}
    assert list(rows) == ["tarflow-mini", "biflow-mini", "rf-mini"]  # ranked by trained FID
    for model, (trained, half, random_fid) in fids.items():
        r = rows[model]
        assert (float(r["fid"]), float(r["fid_half_steps"]), float(r["fid_random"])) == (trained, half, random_fid)
        assert (r["train_steps"], r["half_steps"]) == ("100", "50")
        assert (r["dtype"], r["options"], r["quality"]) == ("float32", "", "")  # one setting each, older than the gate
    assert [rows[m]["fid_rank"] for m in rows] == ["1", "2", "3"]  # random FIDs (all larger) take no rank
    assert rows["biflow-mini"]["ms_per_image"] == "8.000" and rows["biflow-mini"]["batch_size"] == "64"
    assert rows["tarflow-mini"]["fid_reference"] == "adm digits-heldout-stats.npz"
    md = paths["mini_md"].read_text().splitlines()
    assert md[0].startswith("| fid_rank | model |") and len(md) == 2 + len(rows)
    assert "| 20.00 (no interval), N 200, 100 steps |" in md[2]  # FIDs of that run have no interval
    # runs without speedup rows: the ratio of the two models' times, exact decoding only, no interval
    speed = board_rows(paths["mini_speedup_csv"])
    assert [(r["model"], r["teacher"], r["basis"], r["batch_size"], r["speedup"], r["speedup_ci_low"]) for r in speed
            ] == [("biflow-mini", "tarflow-mini", "exact decoding", bs, "80.0", "") for bs in ("1", "64")]
    assert (speed[0]["fid"], speed[0]["teacher_fid"]) == ("30.00", "20.00")


def mini_settings_run(runs):
    """A mini track run with the quality gate: tarflow-mini at sequential (its reference), Jacobi at
    1e-3 (verified, FID within 2%) and at 0.1 (failed, the fastest), each with its FID; biflow-mini and
    rf-mini at their defaults; bf16 of each in a second bench file; speedup rows of biflow-mini over
    each teacher setting at batch 1 and 64."""
    base = {**MEASURED, "schema_version": 2, "created": "2026-12-01T12:00:00+00:00", "params": 1}
    ref = {"mode": "adm", "reference": "digits-heldout-stats.npz", "network": "inception"}
    manifest, files = [], {"trained": [], "bench": [], "bench-bf16": []}
    seq, jac, loose = {}, {"decoding": "jacobi", "jacobi_tol": 0.001}, {"decoding": "jacobi", "jacobi_tol": 0.1}
    # model, options, dtype, quality, FID (interval), ms per image at batch 1 and 64, iterations (mean, max)
    settings = [("tarflow-mini", seq, "float32", "reference", (20.0, 18.0, 22.0), (640.0, 10.0), (15, 15)),
                ("tarflow-mini", jac, "float32", "verified", (20.2, 18.2, 22.2), (300.0, 12.0), (6.5, 9)),
                ("tarflow-mini", loose, "float32", "failed", (23.0, 21.0, 25.0), (100.0, 5.0), (2.0, 3)),
                ("tarflow-mini", seq, "bfloat16", "verified", (20.3, 18.3, 22.3), (500.0, 9.0), (15, 15)),
                ("biflow-mini", seq, "float32", "reference", (21.0, 19.0, 23.0), (8.0, 0.125), None),
                ("biflow-mini", seq, "bfloat16", "verified", (21.1, 19.1, 23.1), (7.0, 0.1), None),
                ("rf-mini", seq, "float32", "reference", (60.0, 55.0, 65.0), (7.0, 0.1), None)]
    for model, options, dtype, quality, (fid, low, high), ms, iters in settings:
        weights = f"sha256:{model}"
        row = {**base, "run_id": "b", "model": model, "family": model.split("-")[0], "nfe": 1, "dtype": dtype,
               "weights": weights, "quality": quality}
        if options == seq and dtype == "float32":  # nfebench eval of the trained model (as the track runs it)
            files["trained"] += [{**row, "run_id": "e", "batch_size": 100, "decode": "on", "n": 200, "quality": "",
                                  "metric": FID, "value": fid, "ci_low": low, "ci_high": high, "config": ref},
                                 {**row, "run_id": "e", "batch_size": 100, "decode": "on", "n": 200, "quality": "",
                                  "metric": "precision", "value": 0.5, "config": ref}]
            manifest.append({"model": model, "role": "trained", "steps": 100, "weights": weights})
        else:  # the gate's FID of a fast setting
            files["bench" if dtype == "float32" else "bench-bf16"].append(
                {**row, "batch_size": 100, "decode": "on", "n": 200, "metric": FID, "value": fid, "ci_low": low,
                 "ci_high": high, "config": {**ref, "options": options}})
        for bs, value in zip((1, 64), ms):
            config = {"options": options, **({"iterations_mean": iters[0], "iterations_max": iters[1]} if iters else {})}
            files["bench" if dtype == "float32" else "bench-bf16"].append(
                {**row, "batch_size": bs, "decode": "off", "n": 9, "metric": MS_PER_IMAGE, "value": value,
                 "ci_low": 0.98 * value, "ci_high": 1.03 * value, "config": config})
    for dtype, teachers in (("float32", settings[:3]), ("bfloat16", settings[3:4])):
        fast = next(s for s in settings if s[0] == "biflow-mini" and s[2] == dtype)
        for _, options, _, quality, _, ms, _ in teachers:
            for i, bs in enumerate((1, 64)):
                ratio = ms[i] / fast[5][i]
                files["bench" if dtype == "float32" else "bench-bf16"].append(
                    {**base, "run_id": "b", "model": "biflow-mini", "family": "biflow", "nfe": 1, "dtype": dtype,
                     "batch_size": bs, "decode": "off", "weights": "sha256:biflow-mini", "quality": fast[3],
                     "metric": "speedup", "value": ratio, "ci_low": 0.95 * ratio, "ci_high": 1.05 * ratio, "n": 9,
                     "config": {"teacher": "tarflow-mini", "options": {}, "teacher_options": options,
                                "teacher_quality": quality, "teacher_exact": options == seq,
                                "fast_ms_per_image": fast[5][i], "teacher_ms_per_image": ms[i]}})
    for role, rows in files.items():
        write_csv(runs / f"mini-full-y-{role}.csv", rows)
    atomic_write(runs / "mini-full-y.json", json.dumps({"checkpoints": manifest}))


def test_mini_table_has_a_row_per_setting_and_speedups_both_ways(tmp_path):
    runs = tmp_path / "runs"
    mini_settings_run(runs)
    published = write_csv(tmp_path / "published.csv", published_rows(), ("evidence",))
    paths = leaderboard.write_leaderboard(published, runs, tmp_path / "out", plot=False)
    rows = {(r["model"], r["dtype"], r["options"]): r for r in board_rows(paths["mini_csv"])}
    seq, jac, loose = (("tarflow-mini", "float32", o) for o in ("", "decoding=jacobi,jacobi_tol=0.001",
                                                               "decoding=jacobi,jacobi_tol=0.1"))
    assert set(rows) == {seq, jac, loose, ("tarflow-mini", "bfloat16", ""), ("biflow-mini", "float32", ""),
                         ("biflow-mini", "bfloat16", ""), ("rf-mini", "float32", "")}
    assert [rows[k]["quality"] for k in (seq, jac, loose)] == ["reference", "verified", "failed"]
    j = rows[jac]
    assert (j["fid"], j["fid_ci_low"], j["fid_ci_high"]) == ("20.20", "18.20", "22.20")
    assert (j["ms_per_image"], j["ms_per_image_batched"], j["batch_size"]) == ("300.000", "12.000", "64")
    assert (j["iterations_mean"], j["iterations_max"], j["iterations_mean_batched"]) == ("6.50", "9", "6.50")
    assert rows[seq]["fid_half_steps"] == "" and rows[seq]["train_steps"] == "100"
    # ranks (every interval of half-width 2: se 1.02, resolved beyond 1.96 sqrt(2) x 1.02 = 2.83): 20.0, 20.2,
    # 20.3, 21.0 and 21.1 share rank 1; 23.0 is resolved from 20.0 alone (3.0 > 2.83; 2.8 is not): rank 2;
    # 60.0 from all six: rank 7
    ranks = {k[0] + " " + k[1] + " " + k[2]: int(r["fid_rank"]) for k, r in rows.items()}
    assert ranks == {"tarflow-mini float32 ": 1, "tarflow-mini float32 decoding=jacobi,jacobi_tol=0.001": 1,
                     "tarflow-mini bfloat16 ": 1, "biflow-mini float32 ": 1, "biflow-mini bfloat16 ": 1,
                     "tarflow-mini float32 decoding=jacobi,jacobi_tol=0.1": 2, "rf-mini float32 ": 7}
    md = paths["mini_md"].read_text()
    assert "| 20.20 [18.20, 22.20], N 200, 100 steps |" in md and "| 300.000 [294.000, 309.000], passes 6.50/9 |" in md
    # the student over its teacher: at exact (sequential) decoding and at the fastest verified setting
    speed = {(r["dtype"], r["batch_size"], r["basis"]): r for r in board_rows(paths["mini_speedup_csv"])}
    assert set(speed) == {(d, bs, b) for d, bs, b in
                          [("float32", "1", "exact decoding"), ("float32", "1", "fastest verified"),
                           ("float32", "64", "exact decoding"), ("float32", "64", "fastest verified"),
                           ("bfloat16", "1", "exact decoding"), ("bfloat16", "1", "fastest verified"),
                           ("bfloat16", "64", "exact decoding"), ("bfloat16", "64", "fastest verified")]}
    exact1, fast1 = speed[("float32", "1", "exact decoding")], speed[("float32", "1", "fastest verified")]
    assert (exact1["teacher_options"], exact1["speedup"], exact1["fid"], exact1["teacher_fid"]) == (
        "", "80.0", "21.00", "20.00")
    # Jacobi at 0.1 is faster still, but failed: the fastest verified teacher is Jacobi at 1e-3
    assert (fast1["teacher_options"], fast1["speedup"], fast1["teacher_fid"], fast1["teacher_quality"]) == (
        "decoding=jacobi,jacobi_tol=0.001", "37.5", "20.20", "verified")
    assert (fast1["speedup_ci_low"], fast1["speedup_ci_high"]) == ("35.6", "39.4")
    # at batch 64 sequential is the teacher's fastest verified decoding
    assert speed[("float32", "64", "fastest verified")]["teacher_options"] == ""
    assert speed[("bfloat16", "1", "exact decoding")]["teacher_fid"] == "20.30"


def test_an_unreadable_mini_manifest_is_refused(inputs, tmp_path):
    published, runs = inputs
    mini_runs(runs)
    atomic_write(runs / "mini-full-x.json", "{not json")
    with pytest.raises(InputError, match="not a readable track manifest"):
        leaderboard.write_leaderboard(published, runs, tmp_path, plot=False)


def test_committed_tables_are_what_the_committed_runs_regenerate(tmp_path):
    # The tables under results/ are never hand-edited: `nfebench leaderboard` on the committed
    # runs must reproduce them byte for byte.
    paths = leaderboard.write_leaderboard(REPO / "results" / "published.csv", REPO / "results" / "runs", tmp_path,
                                          plot=False)
    assert {"csv", "md", "mini_csv", "mini_md"} <= set(paths)
    for path in paths.values():
        committed = REPO / "results" / path.name
        assert path.read_text() == committed.read_text(), f"{committed} differs from `nfebench leaderboard`"


def timing_row(run_id, created, value, ci=None, n=5, model="biflow-b2", bs=1, decode="off", metric=MS_PER_IMAGE,
               **extra):
    low, high = ci if ci else ("", "")
    return {**MEASURED, "schema_version": 2, "run_id": run_id, "created": created, "model": model, "family": "biflow",
            "nfe": 1, "batch_size": bs, "decode": decode, "weights": "random-init", "metric": metric, "value": value,
            "ci_low": low, "ci_high": high, "n": n, **extra}


def chosen_ms(tmp_path, runs):
    published = write_csv(tmp_path / "published.csv", published_rows(), ("evidence",))
    for i, rows in enumerate(runs):
        write_csv(tmp_path / "runs" / f"run{i}.csv", rows)
    rows = board_rows(leaderboard.write_leaderboard(published, tmp_path / "runs", tmp_path / "out", plot=False)["csv"])
    return next(r for r in rows if r["model"] == "biflow-b2" and r["source"] == "measured")


def test_choice_rule_interval_then_samples_then_run_id_never_the_date(tmp_path):
    late, early = "2026-12-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"
    # narrowest relative interval wins, though it is the older file
    assert chosen_ms(tmp_path / "a", [[timing_row("r2", late, 3705.0, (2200.0, 5200.0))],
                                      [timing_row("r1", early, 329.0, (326.0, 333.0))]])["ms_per_image"] == "329.000"
    # a schema-1 row's spread stands in for its interval: the quiet committed run beats a noisy new one
    old = {**timing_row("r0", early, 328.6, n=5), "schema_version": 1, "spread": 1.9}
    assert chosen_ms(tmp_path / "b", [[old], [timing_row("r9", late, 3705.0, (2200.0, 5200.0))]])[
        "ms_per_image"] == "328.600"
    # ... and a row with neither (one call) loses to any row with an interval
    single = {**timing_row("r0", late, 300.0, n=1), "schema_version": 1}
    assert chosen_ms(tmp_path / "c", [[single], [timing_row("r1", early, 400.0, (300.0, 500.0))]])[
        "ms_per_image"] == "400.000"
    # equal relative widths: the most samples, then the greater run id (whatever `created` says)
    same = (99.0, 101.0)
    assert chosen_ms(tmp_path / "d", [[timing_row("r1", late, 100.0, same, n=5)],
                                      [timing_row("r2", early, 100.0, same, n=9)]])["citation"] == "run r2"
    assert chosen_ms(tmp_path / "e", [[timing_row("r3", early, 100.0, same)],
                                      [timing_row("r2", late, 100.0, same)]])["citation"] == "run r3"


def test_measured_speedup_rows_give_the_speedup_and_its_interval(tmp_path):
    created = "2026-11-25T10:00:00+00:00"
    rows = [timing_row("s", created, 330.0, (325.0, 336.0)), timing_row("s", created, 3900.0, (3850.0, 3960.0),
                                                                        decode="on"),
            {**timing_row("s", created, 9900.0, (9800.0, 10100.0), model="itarflow-b2"), "family": "tarflow", "nfe": 2},
            timing_row("s", created, 30.1, (29.2, 31.0), metric="speedup", config={"teacher": "itarflow-b2"}),
            timing_row("s", created, 3.44, (3.38, 3.50), decode="on", metric="speedup",
                       config={"teacher": "itarflow-b2"}),
            # the best-throughput row has no batch size: no setting of the table
            timing_row("s", created, 99.0, (98.0, 100.0), bs="", metric="speedup",
                       config={"teacher": "itarflow-b2", "at": "best throughput"})]
    r = chosen_ms(tmp_path, [rows])
    assert (r["teacher"], r["speedup"], r["speedup_ci_low"], r["speedup_ci_high"]) == ("itarflow-b2", "30.1", "29.2",
                                                                                      "31.0")
    assert (r["speedup_decode"], r["speedup_decode_ci_low"], r["speedup_decode_ci_high"]) == ("3.4", "3.4", "3.5")
    # the measured ratio, not 9900 / 330 = 30.0 recomputed from the chosen times
    assert r["speedup"] != f"{9900 / 330:.1f}"


def local_bench(folder, created="2026-11-26T10:00:00+00:00"):
    write_csv(folder / "bench-cpu-torch-cpu-mine.csv",
              [timing_row("mine", created, 50.0, (49.0, 51.0), model="meanflow-b2", bs=2)])


def test_local_runs_enter_only_when_asked_and_never_over_the_committed_tables(inputs, tmp_path, monkeypatch):
    published, runs = inputs
    local = tmp_path / "local"
    local_bench(local)
    committed = leaderboard.write_leaderboard(published, runs, tmp_path / "results", plot=False)
    assert "run mine" not in committed["csv"].read_text()  # a local run never enters by itself
    mine = leaderboard.write_leaderboard(published, runs, local, plot=False, local=local)
    text = mine["csv"].read_text()
    assert "run mine" in text and mine["csv"].parent == local
    assert text.count("\n") == committed["csv"].read_text().count("\n") + 1  # one more setting: meanflow-b2 at b2
    with pytest.raises(InputError, match="never over the committed tables"):
        leaderboard.write_leaderboard(published, runs, runs.parent, plot=False, local=local)


def test_cli_include_local_writes_to_the_local_folder(inputs, tmp_path, monkeypatch, capsys):
    published, runs = inputs
    monkeypatch.chdir(tmp_path)  # the default folders are relative: results/local here
    local = tmp_path / "results" / "local"
    local_bench(local)
    args = ["leaderboard", "--published", str(published), "--runs", str(runs), "--no-plot"]
    assert main(args + ["--include-local"]) == 0
    assert sorted(p.name for p in local.iterdir()) == sorted(
        ["bench-cpu-torch-cpu-mine.csv"] + [f"leaderboard{t}.{ext}" for t in ("", "-frontier", "-budgets", "-optima")
                                            for ext in ("csv", "md")])
    assert "run mine" in (local / "leaderboard.csv").read_text()
    assert main(args + ["--include-local", "--out", "results"]) == 2
    assert "never over the committed tables" in capsys.readouterr().err
    assert not (tmp_path / "results" / "leaderboard.csv").exists()


def gate_run(folder, created="2026-12-01T10:00:00+00:00"):
    """A bench run of biflow-b2 and its teacher with the quality gate: the teacher at sequential
    decoding (its reference) and at Jacobi (unverified: random weights), biflow-b2 in bf16 (failed)."""
    rows = []
    for model, family, options, dtype, quality, ms in (
            ("itarflow-b2", "tarflow", {}, "float32", "reference", 9000.0),
            ("itarflow-b2", "tarflow", {"decoding": "jacobi", "jacobi_tol": 0.001}, "float32", "unverified", 3000.0),
            ("biflow-b2", "biflow", {}, "float32", "reference", 300.0),
            ("biflow-b2", "biflow", {}, "bfloat16", "failed", 100.0)):
        rows.append(timing_row("g", created, ms, (0.99 * ms, 1.01 * ms), model=model, family=family, dtype=dtype,
                               quality=quality, config={"options": options}))
    for options, exact, ratio in (({}, True, 30.0), ({"decoding": "jacobi", "jacobi_tol": 0.001}, False, 10.0)):
        rows.append(timing_row("g", created, ratio, (0.95 * ratio, 1.05 * ratio), metric="speedup", quality="reference",
                               config={"teacher": "itarflow-b2", "options": {}, "teacher_options": options,
                                       "teacher_exact": exact}))
    write_csv(folder / "bench-gate.csv", rows)


def test_settings_are_rows_of_their_own_with_their_quality_and_the_exact_teacher_speedup(tmp_path):
    published = write_csv(tmp_path / "published.csv", published_rows(), ("evidence",))
    gate_run(tmp_path / "runs")
    paths = leaderboard.write_leaderboard(published, tmp_path / "runs", tmp_path / "out", plot=False)
    rows = {(r["model"], r["dtype"], r["options"]): r for r in board_rows(paths["csv"]) if r["source"] == "measured"}
    assert set(rows) == {("itarflow-b2", "float32", ""), ("itarflow-b2", "float32", "decoding=jacobi,jacobi_tol=0.001"),
                         ("biflow-b2", "float32", ""), ("biflow-b2", "bfloat16", "")}
    assert [rows[k]["quality"] for k in sorted(rows)] == ["failed", "reference", "reference", "unverified"]
    # the student's speed-up is over the teacher at exact (sequential) decoding, not over its Jacobi setting
    assert rows[("biflow-b2", "float32", "")]["speedup"] == "30.0"


def test_the_pareto_plot_pairs_a_paper_fid_only_with_a_reference_or_verified_timing(tmp_path):
    published = write_csv(tmp_path / "published.csv", published_rows(), ("evidence",))
    gate_run(tmp_path / "runs")
    board = leaderboard.build(leaderboard.read_published(published) + leaderboard.read_runs(tmp_path / "runs"))
    points = [p for p in leaderboard.pareto_points(board) if p["kind"] == "measured-time"]
    # biflow-b2 bf16 (failed, 100 ms) and the teacher's Jacobi (unverified, 3000 ms) are faster, but not drawn
    assert sorted((p["model"], p["ms"]) for p in points) == [("biflow-b2", 300.0), ("itarflow-b2", 9000.0)]


def test_ranks_do_not_resolve_what_the_intervals_cannot(tmp_path):
    published = write_csv(tmp_path / "published.csv", published_rows(), ("evidence",))
    ref = {"mode": "adm", "reference": "ref.npz", "network": "inception"}
    runs = tmp_path / "runs"
    for i, (model, fid, low, high) in enumerate((("meanflow-b2", 6.5, 6.1, 6.9), ("sit-b2", 6.8, 6.4, 7.2),
                                                 ("imf-b2", 9.0, 8.6, 9.4))):
        rows = eval_run(f"q{i}", fid, "sha256:ab", model=model)
        write_csv(runs / f"q{i}.csv", [{**r, "ci_low": low, "ci_high": high, "config": ref} if r["metric"] == FID
                                       else r for r in rows])
    board = {r["model"]: r for r in board_rows(leaderboard.write_leaderboard(published, runs, tmp_path / "o",
                                                                             plot=False)["csv"])
             if r["source"] == "measured"}
    assert {m: board[m]["fid_rank"] for m in board} == {"meanflow-b2": "1", "sit-b2": "1", "imf-b2": "3"}
    assert (board["sit-b2"]["fid_ci_low"], board["sit-b2"]["fid_ci_high"]) == ("6.40", "7.20")
    md = (tmp_path / "o" / "leaderboard.md").read_text()
    assert "| 6.80 [6.40, 7.20], N 1000 |" in md and "| 2.39 (no interval), N 50000 |" in md


def test_a_table_writes_every_column_to_csv_and_only_its_chosen_columns_to_markdown(tmp_path):
    # A readable table names its Markdown columns; its CSV keeps every one (issue 21's short tables).
    table = leaderboard.Table("short_demo", ("model", "nfe", "fid", "fid_ci_low", "fid_ci_high", "weights"),
                              decimals={"fid": 2, "fid_ci_low": 2, "fid_ci_high": 2}, intervals={"fid": True},
                              markdown_columns=("model", "fid"))
    rows = [{"model": "a|b", "nfe": 1.0, "fid": 49.04, "fid_ci_low": 45.1, "fid_ci_high": 52.9, "weights": "w"},
            {"model": "c", "nfe": "", "fid": 2.391, "fid_ci_low": None, "fid_ci_high": None, "weights": None}]
    paths = table.write(rows, tmp_path)
    assert {k: p.name for k, p in paths.items()} == {"short_demo_csv": "leaderboard-short-demo.csv",
                                                      "short_demo_md": "leaderboard-short-demo.md"}
    assert paths["short_demo_csv"].read_text() == ("model,nfe,fid,fid_ci_low,fid_ci_high,weights\n"
                                                   "a|b,1,49.04,45.10,52.90,w\nc,,2.39,,,\n")
    assert paths["short_demo_md"].read_text() == ("| model | fid |\n|---|---:|\n| a\\|b | 49.04 [45.10, 52.90] |\n"
                                                  "| c | 2.39 (no interval) |\n")
    # without chosen columns the Markdown shows every column but the interval bounds
    assert leaderboard.Table("", table.columns, table.decimals, table.intervals).shown() == (
        "model", "nfe", "fid", "weights")


def test_a_difference_is_resolved_only_beyond_the_combined_interval():
    # se = half-width / 1.96; resolved when the gap exceeds 1.96 sqrt(se_a^2 + se_b^2)
    a = (10.0, 9.0, 11.0)  # se 1 / 1.96
    limit = 1.96 * (2 * (1 / 1.96) ** 2) ** 0.5  # sqrt(2) = 1.414...
    assert leaderboard.resolved_below(a, (10.0 + limit + 1e-9, 10.0 + limit - 1 + 1e-9, 10.0 + limit + 1 + 1e-9))
    assert not leaderboard.resolved_below(a, (10.0 + limit - 1e-9, 10.0 + limit - 1 - 1e-9, 10.0 + limit + 1 - 1e-9))
    assert not leaderboard.resolved_below((12.0, 11.0, 13.0), a)  # never resolved below a smaller value
    # without intervals any difference is resolved, and equal values share the lower rank
    assert leaderboard.resolved_below((6.17, None, None), (6.83, None, None))
    assert leaderboard.resolved_ranks({"x": (2.0, None, None), "y": (2.0, None, None), "z": (3.0, None, None)}) == {
        "x": 1, "y": 1, "z": 3}
