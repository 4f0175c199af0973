"""Files nfebench did not write itself are checked before anything is computed from them.

Each case is a hostile but realistic input to a command, built here from a valid file: the command
exits 2 with one line naming the file and the field, raises no traceback and writes no output.
The property tests corrupt a valid run file and a valid statistics file at random: the reader
either refuses the file with an InputError or returns values that still keep the schema.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.api.errors import InputError
from harness.cli import main
from harness.metrics.fid import load_stats, save_stats, RunningStats
from harness.results import NUMERIC_COLUMNS, OK, STATUSES, VALUE_RANGES, read_run

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "results" / "baselines" / "cpu-ci-bench.csv"
MINI_RUN = next((ROOT / "results" / "runs").glob("mini-full-*-trained.csv"))


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def corrupt_csv(src: Path, dst: Path, metric: str, **cells) -> Path:
    """`src` with the first row of `metric` given `cells` (as text, as a user's editor would)."""
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    i = df.index[df.metric == metric][0]
    for col, value in cells.items():
        df.loc[i, col] = value
    df.to_csv(dst, index=False)
    return dst


@pytest.mark.parametrize("cells, field", [
    (dict(ci_low="1e9"), "ci_low"),  # above its value
    (dict(ci_low="2", ci_high="1"), "ci_"),  # the interval upside down
    (dict(value="nan"), "value"),
    (dict(value="inf"), "value"),
    (dict(value="-3.5"), "value"),  # a negative time
    (dict(value="fast"), "value"),
    (dict(status="fine"), "status"),
    (dict(schema_version="9"), "schema_version"),
])
def test_regress_refuses_an_impossible_row(tmp_path, capsys, cells, field):
    bad = corrupt_csv(BENCH, tmp_path / "current.csv", "ms_per_image", **cells)
    code, err = run_cli(capsys, "regress", "--baseline", str(BENCH), "--current", str(bad))
    assert code == 2, err
    assert "current.csv line" in err and field in err and "Traceback" not in err


@pytest.mark.parametrize("cells, field", [
    (dict(value="-3.0", ci_low="-6.0", ci_high="0.0"), "value"),  # a negative FID
    (dict(value="49.04", ci_low="60.0", ci_high="70.0"), "ci_low"),  # an interval that misses its value
    (dict(value="nan"), "value"),
])
def test_leaderboard_refuses_an_impossible_fid(tmp_path, capsys, cells, field):
    runs = tmp_path / "runs"
    shutil.copytree(MINI_RUN.parent, runs)
    corrupt_csv(MINI_RUN, runs / MINI_RUN.name, "fid", **cells)
    out = tmp_path / "board"
    code, err = run_cli(capsys, "leaderboard", "--runs", str(runs), "--out", str(out), "--no-plot")
    assert code == 2 and MINI_RUN.name in err and field in err and "Traceback" not in err
    assert not out.exists()  # nothing written


def stats_file(path: Path, d: int = 6, **extra) -> Path:
    """A valid nfebench statistics file of dimension d, with `extra` arrays replaced or added."""
    x = np.random.default_rng(0).standard_normal((20, d))
    save_stats(path, {"pool": RunningStats(d).update(x)}, mode="adm", networks={"pool": "net"}, features={"pool": x})
    if extra:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays.update(extra)
        for k in [k for k, v in arrays.items() if v is None]:
            del arrays[k]
        np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("extra, field", [
    (dict(mu=np.array([object()] * 6, dtype=object)), "'mu'"),  # needs pickle to read
    (dict(n=None), "'n'"),  # a format but no count
    (dict(format=np.str_("nfebench-stats-9")), "format"),
    (dict(mu=np.zeros((6, 1))), "'mu'"),
    (dict(sigma=np.zeros(6)), "'sigma'"),
    (dict(pool_features=np.zeros((20, 5), np.float32)), "pool_features"),
    (dict(mode=np.str_("bicubic")), "mode"),
    (dict(n=np.float64(20.0)), "'n'"),
])
def test_fid_refuses_a_malformed_statistics_file(tmp_path, capsys, extra, field):
    good = stats_file(tmp_path / "good.npz")
    bad = stats_file(tmp_path / "bad.npz", **extra)
    code, err = run_cli(capsys, "fid", str(good), str(bad), "--json")
    assert code == 2 and "bad.npz" in err and field in err and "Traceback" not in err


@pytest.mark.parametrize("content", [b"hello\n", np.random.default_rng(1).bytes(4096)])
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, capsys, content):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(content)
    out = tmp_path / "bench.csv"
    code, err = run_cli(capsys, "bench", "--models", "rf-mini", "--checkpoint", str(weights), "--batch-sizes", "1",
                        "--decode", "off", "--max-time", "0.1", "--no-progress", "--out", str(out))
    assert code == 2 and "weights.pt" in err and "Traceback" not in err
    assert "weights_only" not in err  # torch's advice to unpickle arbitrary code is not passed on
    assert not out.exists()
    good = stats_file(tmp_path / "ref.npz")
    code, err = run_cli(capsys, "fid", str(good), str(good), "--metrics", "fd_dinov2", "--dinov2-weights", str(weights))
    assert code == 2 and "weights.pt" in err and "Traceback" not in err and "weights_only" not in err


@pytest.mark.parametrize("setting, message", [
    ("channels=abc", "channels must be an integer, got 'abc'"),
    ("noise_std=abc", "noise_std must be a finite number, got 'abc'"),
    ("channels=1.5", "channels must be an integer, got 1.5"),
    ("noise_std=inf", "noise_std must be a finite number, got inf"),
])
def test_settings_are_parsed_by_their_declared_type(tmp_path, capsys, setting, message):
    out = tmp_path / "bench.csv"
    code, err = run_cli(capsys, "bench", "--models", "tarflow-mini", "--set", setting, "--batch-sizes", "1",
                        "--decode", "off", "--max-time", "0.1", "--no-progress", "--out", str(out))
    assert code == 2 and message in err and "Traceback" not in err and not out.exists()


# ----------------------------------------------------------------------------- random corruptions

BAD_CELLS = st.sampled_from(["", "nan", "inf", "-inf", "-1", "-1e-9", "1e300", "0", "2", "x", "ok", "error", "9",
                             "1.5e-3", "  ", "None"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.integers(0, 22), column=st.sampled_from(["value", "ci_low", "ci_high", "spread", "status",
                                                       "schema_version", "metric"]), cell=BAD_CELLS)
def test_a_corrupted_run_file_is_refused_or_still_keeps_the_schema(tmp_path, row, column, cell):
    df = pd.read_csv(BENCH, dtype=str, keep_default_na=False)
    df.loc[row % len(df), column] = cell
    path = tmp_path / "run.csv"
    df.to_csv(path, index=False)
    try:
        read = read_run(path)
    except InputError as exc:
        assert "run.csv" in str(exc)
        return
    for r in read.to_dict("records"):  # what was accepted is what a row may be
        assert r["status"] in STATUSES and int(r["schema_version"]) in (1, 2)
        if r["status"] != OK:
            continue
        assert math.isfinite(r["value"])
        low, high = VALUE_RANGES.get(r["metric"], (None, None))
        assert (low is None or r["value"] >= low) and (high is None or r["value"] <= high)
        assert math.isnan(r["ci_low"]) or r["ci_low"] <= r["value"]
        assert math.isnan(r["ci_high"]) or r["ci_high"] >= r["value"]
        assert all(isinstance(r[c], float) for c in NUMERIC_COLUMNS)


CORRUPTIONS = {
    "nan": lambda a: np.where(np.ones_like(a, bool), np.nan, a) if a.dtype.kind == "f" else a,
    "text": lambda a: np.str_("x"),
    "object": lambda a: np.array([object()], dtype=object),
    "int": lambda a: a.astype(np.int64) if a.dtype.kind == "f" else np.int64(3),
    "transpose": lambda a: a.T[..., :-1] if a.ndim else a,
    "scalar": lambda a: np.float64(1.0),
    "missing": lambda a: None,
}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["mu", "sigma", "n", "mode", "format", "network", "pool_features"]),
       how=st.sampled_from(sorted(CORRUPTIONS)))
def test_a_corrupted_statistics_file_is_refused_or_still_keeps_the_schema(tmp_path, key, how):
    path = stats_file(tmp_path / "good.npz")
    with np.load(path) as data:
        original = data[key]
    stats_file(path, **{key: CORRUPTIONS[how](original)})
    try:
        ref = load_stats(path)
    except InputError as exc:
        assert "good.npz" in str(exc)
        return
    mu, sigma = ref.gaussians["pool"]
    assert mu.ndim == 1 and sigma.shape == (len(mu), len(mu)) and np.isfinite(mu).all() and np.isfinite(sigma).all()
    assert ref.kind != "nfebench" or (ref.n >= 1 and ref.mode in ("adm", "clean"))
    for feats in ref.features.values():
        assert feats.ndim == 2 and feats.shape[1] == len(mu) and np.isfinite(feats).all()


def test_statistics_of_another_network_are_refused_in_every_path(tmp_path, capsys):
    """Stats against stats, images against stats, and eval: another feature network never gives a
    number (exit 2, nothing written), where it once gave an FID labelled as Inception's."""
    ours = stats_file(tmp_path / "ours.npz", d=2048)
    other = stats_file(tmp_path / "other.npz", d=2048, network=np.str_("another-inception (sha1:0123456789ab)"))
    code, err = run_cli(capsys, "fid", str(ours), str(other), "--json")
    assert code == 2 and "other.npz" in err and "another-inception" in err and "Traceback" not in err

    images = tmp_path / "images.npz"
    np.savez(images, arr_0=np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8))
    code, err = run_cli(capsys, "fid", str(images), str(other), "--batch-size", "12")
    assert code == 2 and "other.npz" in err and "another-inception" in err

    out = tmp_path / "eval.csv"
    code, err = run_cli(capsys, "eval", "--model", "rf-mini", "--num-samples", "12", "--batch-size", "12", "--seed",
                        "0", "--ref", str(other), "--out", str(out))
    assert code == 2 and "another-inception" in err and "Traceback" not in err and not out.exists()
