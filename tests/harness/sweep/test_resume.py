"""A sweep killed with SIGKILL part-way and rerun gives the rows an uninterrupted sweep gives.

Each sweep runs as the CLI in a child process with one intra-op thread (Inception features on
the CPU change with the thread count, at float32 rounding, not with the batch size), so the
quality numbers are compared bit for bit. The kill lands inside the second setting's quality
pass, after its first shard: the first setting's rows must come back unchanged (the killed
process wrote them), the second's pass must resume from its stored shard.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.results import read_run

pytestmark = pytest.mark.slow
GRID = ("rf-mini:num_steps=1,2",)
QUALITY = ("fid", "kid")


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _argv(tiny, reference, root):
    return [sys.executable, "-m", "harness.cli",
            *tiny.argv(reference, root / "wd", root / "sweep.csv", models="rf-mini", grid=GRID, shard=1)]


def _quality(path):
    """(setting options, metric) -> (value, ci_low, ci_high, n) of the run file's quality rows."""
    out = {}
    for r in read_run(path).to_dict("records"):
        if r["metric"] in QUALITY:
            key = (json.dumps(json.loads(r["config"])["options"], sort_keys=True), r["metric"])
            out[key] = (r["value"], r["ci_low"], r["ci_high"], r["n"])
    return out


def test_a_sweep_killed_part_way_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path, reference, tiny):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    subprocess.run(_argv(tiny, reference, whole), env=_env(), check=True, capture_output=True)

    proc = subprocess.Popen(_argv(tiny, reference, killed), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    second = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted((killed / "wd" / "settings").glob("rf-mini_num_steps=2_*/eval/shards/000000.npz"))
        if found:
            second = found[0].parents[2]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert second is not None and proc.returncode == -signal.SIGKILL, "the sweep finished before it was killed"
    assert not (second / "quality.json").exists()  # killed inside its quality pass
    before = killed.joinpath("sweep.csv").read_text().splitlines()  # the first setting's rows, as written

    resumed = subprocess.run(_argv(tiny, reference, killed), env=_env(), check=True, capture_output=True, text=True)
    assert "adds 0 setting(s); 2 from earlier runs" in resumed.stderr
    after = killed.joinpath("sweep.csv").read_text().splitlines()
    assert len(before) > 1 and after[:len(before)] == before  # the killed process's rows come back unchanged
    assert _quality(killed / "sweep.csv") == _quality(whole / "sweep.csv")
    assert len(_quality(whole / "sweep.csv")) == 2 * len(QUALITY)
