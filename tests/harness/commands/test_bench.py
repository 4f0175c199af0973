"""`nfebench bench` from the command line: bad input exits 2 and writes nothing, and the README's
order (the main job, then the tests) leaves the committed leaderboard and its test alone."""

import re
import shutil
import subprocess
from pathlib import Path

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
