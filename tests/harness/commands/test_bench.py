"""`nfebench bench` from the command line: bad input exits 2 and writes nothing, checkpoints, --set
and --options reach the rows, the summary is readable off a terminal, and the README's order
(the main job, then the tests) leaves the committed leaderboard and its test alone."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from harness import leaderboard
from harness.cli import main
from harness.results import SPEEDUP, read_run

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("option, message", [
    (["--max-time", "0"], "--max-time must be a positive number"),
    (["--max-time", "-3"], "--max-time must be a positive number"),
    (["--repeats", "0"], "--repeats >= 1"),
    (["--ci-target", "0"], "--ci-target must lie strictly between 0 and 1"),
    (["--ci-target", "1"], "--ci-target must lie strictly between 0 and 1"),
    (["--ci-target", "1.5"], "--ci-target must lie strictly between 0 and 1"),
    (["--decode-batch-sizes", "2"], "--decode-batch-sizes must be some of --batch-sizes"),
])
def test_bad_statistics_options_exit_2_with_a_clear_message(tmp_path, capsys, option, message):
    out = tmp_path / "run.csv"
    argv = ["bench", "--models", "biflow-mini", "--batch-sizes", "1", "--device", "cpu", "--no-progress",
            "--no-calibration", "--out", str(out), *option]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_out_in_a_missing_folder_exits_2(tmp_path, capsys):
    out = tmp_path / "no-such-folder" / "run.csv"
    assert main(["bench", "--models", "biflow-mini", "--device", "cpu", "--no-progress", "--out", str(out)]) == 2
    assert f"the folder {out.parent} does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_readme_order_main_job_then_tests_stays_green(monkeypatch, capsys, tmp_path):
    """The issue's scenario on the mini track's tiny pair: `nfebench bench` with its default output
    from the repository root, then what the leaderboard tests check."""
    monkeypatch.chdir(REPO)
    local = REPO / "results" / "local"
    existed = local.is_dir()
    before = set(local.iterdir()) if existed else set()
    runs_before = set((REPO / "results" / "runs").iterdir())
    try:
        assert main(["bench", "--models", "biflow-mini,tarflow-mini", "--batch-sizes", "1", "--decode", "off",
                     "--device", "cpu", "--max-time", "2", "--no-progress"]) == 0
        printed = capsys.readouterr().out
        made = set(local.iterdir()) - before
        run_file = next(p for p in made if p.suffix == ".csv")
        assert f"run file: {run_file.relative_to(REPO)}" in printed.replace("\n", " ")
        assert set((REPO / "results" / "runs").iterdir()) == runs_before  # the curated record is untouched
        df = read_run(run_file)
        speed = df[df.metric == SPEEDUP]
        assert list(speed.model) == ["biflow-mini"] and speed.n.iloc[0] >= 1
        if shutil.which("git"):  # the run is git-ignored: a fresh clone's `git status` stays clean
            ignored = subprocess.run(["git", "check-ignore", "-q", str(run_file)], cwd=REPO)
            assert ignored.returncode == 0, f"{run_file} is not git-ignored"
        # what test_leaderboard.py::test_committed_tables_are_what_the_committed_runs_regenerate checks
        paths = leaderboard.write_leaderboard(REPO / "results" / "published.csv", REPO / "results" / "runs",
                                              tmp_path / "board", plot=False)
        for path in paths.values():
            assert path.read_text() == (REPO / "results" / path.name).read_text()
        # ... and the user still sees their own run in their own leaderboard
        run_id = re.search(r"bench-custom-torch-cpu-(.+)\.csv", run_file.name).group(1)
        assert main(["leaderboard", "--include-local", "--no-plot", "--out", str(tmp_path / "mine")]) == 0
        assert f"run {run_id}" in (tmp_path / "mine" / "leaderboard.csv").read_text()
    finally:
        for p in set(local.iterdir()) - before if local.is_dir() else ():
            p.unlink()
        if not existed and local.is_dir():
            local.rmdir()


# --- checkpoints, --set and --options --------------------------------------------------------

@pytest.fixture(scope="module")
def mini_checkpoint(tmp_path_factory):
    import torch

    from adapters import load_sampler

    path = tmp_path_factory.mktemp("ckpt") / "tarflow-mini.pt"
    torch.save(load_sampler("tarflow-mini").net.state_dict(), path)
    return path


def bench_argv(out, *extra, models="tarflow-mini"):
    return ["bench", "--models", models, "--batch-sizes", "1", "--device", "cpu", "--no-progress",
            "--no-calibration", "--warmup", "0", "--repeats", "5", "--max-time", "0.2", "--out", str(out), *extra]


@pytest.mark.parametrize("extra, message", [
    (["--options", "decoding=jacobi,jacobi_size=3"],
     "tarflow-mini (family tarflow) has no option(s) jacobi_size; it accepts: annealed_guidance, attn_temp, "
     "guide_what, denoise, decoding, jacobi_tol, jacobi_max_iters, jacobi_init, gs_segments"),
    (["--options", "decoding=jacobi,jacobi_tol=-1"], "jacobi_tol must be a number >= 0, got -1"),
    (["--options", "decoding=gs-jacobi,gs_segments=1/2"], "gs_segments has 2 entries, but the model has 4 blocks"),
    (["--options", "decoding"], "'decoding' is not key=value"),
    (["--options", "jacobi_tol="], "is not key=value"),
    (["--options", ""], "--options needs key=value pairs"),
    (["--options", "rf-mini:steps=2"], "names 'rf-mini', which is not among the models benchmarked"),
    (["--set", "num_blocks"], "'num_blocks' is not key=value"),
    (["--set", "depth=2"], "unknown config option(s) depth"),
    (["--checkpoint", "no-such-file.pt"], "checkpoint no-such-file.pt does not exist"),
])
def test_bad_settings_exit_2_naming_what_is_wrong(tmp_path, capsys, extra, message):
    assert main(bench_argv(tmp_path / "run.csv", *extra)) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_options_without_a_value_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: "expected one argument"
        main(bench_argv(tmp_path / "run.csv", "--options"))
    assert exc.value.code == 2 and "--options: expected one argument" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_option_one_family_lacks_names_that_family_and_the_prefix(tmp_path, capsys):
    assert main(bench_argv(tmp_path / "run.csv", "--options", "decoding=jacobi", models="biflow-mini,tarflow-mini")) == 2
    err = capsys.readouterr().err
    assert "biflow-mini (family biflow) has no option(s) decoding; it accepts: none" in err
    assert "--options biflow-mini:key=value" in err
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_that_does_not_fit_set_names_its_tensors(tmp_path, capsys, mini_checkpoint):
    argv = bench_argv(tmp_path / "run.csv", "--checkpoint", str(mini_checkpoint), "--set", "num_blocks=2")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {mini_checkpoint} does not match the model configuration: unexpected tensors:" in err
    assert "blocks.2.attn_blocks.0.attention.norm.bias" in err and "(62 in all)" in err  # blocks 2 and 3
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_options_and_set_reach_the_rows_and_the_summary_is_whole_off_a_terminal(
        tmp_path, capsys, mini_checkpoint):
    from adapters.api.checkpoint import file_sha256

    out = tmp_path / "run.csv"
    argv = bench_argv(out, "--checkpoint", f"tarflow-mini={mini_checkpoint}", "--set", "tarflow-mini:denoise=false",
                      "--options", "tarflow-mini:decoding=sequential",
                      "--options", "tarflow-mini:decoding=gs-jacobi,gs_segments=1/1/4/1,jacobi_tol=1e-3",
                      models="biflow-mini,tarflow-mini")
    assert main(argv) == 0
    printed = capsys.readouterr().out  # captured: not a terminal
    df = read_run(out)
    timed = df[(df.metric == "ms_per_image") & (df.model == "tarflow-mini")]
    assert set(timed.weights) == {file_sha256(mini_checkpoint)}
    assert set(timed.nfe.astype(int)) == {1}  # --set denoise=false: no score step
    options = [json.loads(c)["options"] for c in timed.config]
    # decoding=sequential is TARFlow's default setting: no options, the reference of the other
    assert options == [{}, {"decoding": "gs-jacobi", "gs_segments": [1, 1, 4, 1], "jacobi_tol": 0.001}]
    assert list(timed.quality)[0] == "reference"
    # the speed-up of the student over each of its teacher's settings
    speed = df[df.metric == SPEEDUP]
    assert [json.loads(c)["teacher_options"] for c in speed.config] == options
    # every cell whole, though rich would cut a table to 80 columns off a terminal
    from harness.timing.summary import _num

    gs = "tarflow-mini[decoding=gs-jacobi,gs_segments=1/1/4/1,jacobi_tol=0.001]"
    line = next(line for line in printed.splitlines() if gs in line and "off" in line)
    row = timed.iloc[1]
    assert row.quality in ("verified", "failed")  # a checkpoint file: the gate checks it
    # Under five timed calls (a loaded machine) there is no interval and the table says "-".
    interval = "-" if pd.isna(row.ci_low) else f"{_num(row.ci_low)}-{_num(row.ci_high)}"
    for cell in (_num(row.value), interval, str(int(row.n)), row.quality):
        assert cell in line, (cell, line)
    assert "…" not in printed
