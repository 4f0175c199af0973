"""The example plug-in (examples/plugin-family) is a third party's family: installed as its own
distribution, found through its `nfebench.adapters` entry point, and run through `nfebench list`,
`bench`, `eval` and `leaderboard` with no change to nfebench.

The package is really installed (``pip install --target``, no dependencies, no network) into a
folder that only the child processes see on their path, so this environment is left untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.datasets import load_digits_split, to_uint8_nhwc
from harness.results import atomic_write_npz

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "plugin-family"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(PLUGIN)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (target / "nfebench_tinyconv-0.1.0.dist-info" / "entry_points.txt").is_file()
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def nfebench(env, *args, cwd=None):
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd)
    assert done.returncode == 0, f"nfebench {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_plugin_is_absent_without_its_distribution():
    done = subprocess.run([sys.executable, "-m", "harness.cli", "list", "--json"], capture_output=True, text=True)
    assert done.returncode == 0 and "tinyconv" not in done.stdout


def test_list_bench_eval_and_leaderboard_run_the_plugin(plugin_env, tmp_path):
    listed = {m["name"]: m for m in json.loads(nfebench(plugin_env, "list", "--json", "--family", "tinyconv"))}
    assert set(listed) == {"tinyconv-s", "tinyconv-m"}
    assert listed["tinyconv-s"]["params"] == 3 * 32 * 9 + 32 + 2 * (32 * 32 * 9 + 32) + 32 * 3 * 9 + 3 + 10 * 32

    runs = tmp_path / "runs"
    runs.mkdir()
    nfebench(plugin_env, "bench", "--models", "tinyconv-s", "--batch-sizes", "1,4", "--decode", "off",
             "--max-time", "0.5", "--device", "cpu", "--no-progress", "--out", str(runs / "bench-tinyconv.csv"))
    bench = pd.read_csv(runs / "bench-tinyconv.csv")
    timed = bench[(bench.model == "tinyconv-s") & (bench.metric == "ms_per_image")]
    assert set(timed.batch_size) == {1, 4} and (timed.value > 0).all() and set(timed.status) == {"ok"}

    # 40 held-out digits: each Inception pass costs ~0.1 s per image here
    split = load_digits_split()
    images = tmp_path / "digits.npz"
    atomic_write_npz(images, arr_0=to_uint8_nhwc(split.ref_x[:40]))
    nfebench(plugin_env, "ref-stats", str(images), "-o", str(tmp_path / "ref.npz"), "--batch-size", "100")
    nfebench(plugin_env, "eval", "--model", "tinyconv-s", "--num-samples", "40", "--batch-size", "20", "--seed", "0",
             "--ref", str(tmp_path / "ref.npz"), "--out", str(runs / "eval-tinyconv.csv"))
    rows = pd.read_csv(runs / "eval-tinyconv.csv")
    fid = rows[rows.metric == "fid"].iloc[0]
    assert fid.model == "tinyconv-s" and fid.family == "tinyconv" and fid.weights == "random-init" and fid.value > 0

    out = tmp_path / "board"
    nfebench(plugin_env, "leaderboard", "--runs", str(runs), "--out", str(out), "--no-plot")
    board = pd.read_csv(out / "leaderboard.csv")
    mine = board[board.model == "tinyconv-s"]
    assert sorted(mine.batch_size) == [1, 4] and (mine.ms_per_image > 0).all()  # one row per timed setting
    assert mine.fid_rank.isna().all() and mine.fid.isna().all()  # random weights: never ranked for quality
