"""`harness.evaluate.sampling`: a work dir that an older nfebench started resumes with this one.

The data in ``tests/harness/data/eval-workdir-708b119/`` was made with the code of commit
708b119 (before `harness/evaluate.py` became a package and `EvalConfig` held its settings),
in a clean clone with its own virtual environment, on one intra-op thread::

    python -c "import numpy as np; np.savez('ref.npz', arr_0=np.random.default_rng(0).integers(
        0, 256, (6, 8, 8, 3), dtype=np.uint8))"
    OMP_NUM_THREADS=1 nfebench eval --model rf-mini --num-samples 8 --shard-size 2 --batch-size 2 \\
        --seed 0 --ref ref.npz --metrics fid,sfid,kid --save-samples samples.npz --work-dir work \\
        --out run.csv &
    # polled every 20 ms; SIGKILL as soon as work/shards/ held two shard files (of four)

so ``work/`` is an interrupted run: its manifest and shards 0 and 1, no result, no samples
file (and no rows). ``old-full-result.json`` is the ``result.json`` of the same command run to
the end with that code. rf-mini has random weights drawn from a fixed seed, so the samples
are the same on both sides of the change.

The comparisons allow float32 rounding (rtol 1e-5), not bit identity: the committed shards'
Inception features were computed on the machine that made them, and the CPU kernels of
another machine may round differently (on the machine that made them the match is exact).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters import load_sampler
from harness.cli import main
from harness.evaluate import (
    EvalConfig,
    MetricOptions,
    evaluate_sampler,
    open_extractors,
    open_source,
    run_manifest,
)
from harness.workdir import FORMAT, MANIFEST, RESULT, STATS

DATA = Path(__file__).resolve().parents[1] / "data" / "eval-workdir-708b119"
# The keys of a nfebench-workdir-2 manifest of an `nfebench eval` run, as 708b119 wrote them.
OLD_KEYS = {"backend", "device_type", "dtype", "format", "guidance", "metric_options", "metrics", "mode", "model",
            "networks", "nfebench_version", "num_samples", "overrides", "reference", "save_samples", "seed",
            "shard_size", "weights"}
RTOL = 1e-5
# The committed shards were computed on another CPU, whose vector kernels round differently: the
# spatial features differed by up to 5.9e-6 (of values up to ~4) on an AVX2-only EPYC, their merged
# covariance by 3.6e-6, and KID, a difference of near-equal means, by 3e-8 (rel 1.5e-5). On an AVX-512
# EPYC (family 25 model 17), with Inception in channels-last, by 1.3e-5, 6.7e-6 and 1.3e-7 (KID's
# upper bound, rel 1.1e-5). The bounds are a few times those: a merge that lost or doubled a shard
# moves every value by orders of magnitude more.
FEATURE_ATOL, METRIC_ATOL = 3e-5, 5e-7

pytestmark = pytest.mark.slow


def eval_argv(root: Path, name: str) -> list[str]:
    """The command that made the committed work dir, with this test's paths."""
    return ["eval", "--model", "rf-mini", "--num-samples", "8", "--shard-size", "2", "--batch-size", "2",
            "--seed", "0", "--ref", str(DATA / "ref.npz"), "--metrics", "fid,sfid,kid",
            "--save-samples", str(root / f"{name}-samples.npz"), "--work-dir", str(root / name),
            "--out", str(root / f"{name}.csv")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The committed interrupted run resumed, and a fresh uninterrupted run, both with this code
    on one intra-op thread (as the data was made)."""
    root = tmp_path_factory.mktemp("resume")
    shutil.copytree(DATA / "work", root / "resumed")
    old_shards = {p.name: p.stat() for p in (root / "resumed" / "shards").glob("*.npz")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(eval_argv(root, "resumed")) == 0
        assert main(eval_argv(root, "fresh")) == 0
    finally:
        torch.set_num_threads(threads)
    return root, old_shards


def values_of(work_dir: Path) -> list[dict]:
    return json.loads((work_dir / RESULT).read_text())["values"]


def assert_same_values(a: list[dict], b: list[dict]) -> None:
    assert [v["metric"] for v in a] == [v["metric"] for v in b] == ["fid", "sfid", "kid"]
    for va, vb in zip(a, b):
        for key in ("value", "spread", "ci_low", "ci_high"):
            assert va[key] == (None if vb[key] is None else pytest.approx(vb[key], rel=RTOL, abs=METRIC_ATOL)), \
                (va["metric"], key)
        assert {k: va[k] for k in ("n", "notes", "network", "extractor")} == \
            {k: vb[k] for k in ("n", "notes", "network", "extractor")}


def test_the_committed_run_is_interrupted():
    """What the test rests on: shards 0 and 1 of 4 done, nothing finished."""
    work = DATA / "work"
    assert sorted(p.name for p in (work / "shards").iterdir()) == ["000000.npz", "000001.npz"]
    assert not (work / RESULT).exists() and not (work / STATS).exists()
    assert json.loads((work / MANIFEST).read_text())["num_samples"] == 8


def test_an_old_interrupted_run_resumes_to_the_uninterrupted_result(runs):
    root, old_shards = runs
    resumed, fresh = root / "resumed", root / "fresh"
    # The old shards were kept, not redone; the missing two were made.
    for name, before in old_shards.items():
        after = (resumed / "shards" / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name
    assert len(list((resumed / "shards").glob("*.npz"))) == 4
    # The old code's shards hold what this code computes for the same samples.
    for s in ("000000.npz", "000001.npz"):
        old, new = np.load(resumed / "shards" / s), np.load(fresh / "shards" / s)
        assert sorted(old.files) == sorted(new.files)
        for key in old.files:
            np.testing.assert_allclose(old[key].astype(np.float64), new[key].astype(np.float64), rtol=RTOL,
                                       atol=FEATURE_ATOL if key in ("pool", "spatial") else 1, err_msg=f"{s} {key}")
    # The merged statistics, the metrics and the samples file equal the uninterrupted run's.
    a, b = np.load(resumed / STATS), np.load(fresh / STATS)
    assert sorted(a.files) == sorted(b.files)
    for key in ("mu", "sigma", "mu_s", "sigma_s", "pool_features", "n"):
        np.testing.assert_allclose(a[key], b[key], rtol=RTOL, atol=FEATURE_ATOL, err_msg=key)
    assert_same_values(values_of(resumed), values_of(fresh))
    assert_same_values(values_of(resumed), json.loads((DATA / "old-full-result.json").read_text())["values"])
    sa, sb = np.load(root / "resumed-samples.npz"), np.load(root / "fresh-samples.npz")
    assert sa["arr_0"].shape == (8, 8, 8, 3) and np.abs(sa["arr_0"].astype(int) - sb["arr_0"]).max() <= 1
    np.testing.assert_array_equal(sa["arr_1"], sb["arr_1"])


def test_the_manifest_keeps_the_old_keys_and_values(runs):
    root, _ = runs
    committed = (DATA / "work" / MANIFEST).read_text()
    assert set(json.loads(committed)) == OLD_KEYS
    assert (root / "resumed" / MANIFEST).read_text() == committed  # the resume left it alone
    assert json.loads((root / "fresh" / MANIFEST).read_text()) == json.loads(committed)  # this code writes the same


def test_a_config_call_reports_the_resumed_run_again(runs):
    """`evaluate_sampler` with an `EvalConfig` (not the CLI's keywords) finds the same settings:
    the finished work dir is reported again without work, and its manifest is the one stored."""
    root, _ = runs
    sampler, reference = load_sampler("rf-mini"), open_source(DATA / "ref.npz")
    config = EvalConfig(num_samples=8, batch_size=4, seed=0, metrics=("fid", "sfid", "kid"), shard_size=2,
                        work_dir=root / "resumed", save_samples=root / "again.npz",
                        settings={"overrides": {}, "backend": "torch"}, progress=False)
    values, skipped, ctx = evaluate_sampler(sampler, reference, config)
    assert ctx["reused"] and skipped == [] and not (root / "again.npz").exists()
    assert [v.value for v in values] == [v["value"] for v in values_of(root / "resumed")]
    extractors, plan, _ = open_extractors(config.metrics, MetricOptions(), "cpu")
    stored = json.loads((root / "resumed" / MANIFEST).read_text())
    assert {"format": FORMAT, **run_manifest(sampler, reference, extractors, plan, config)} == stored
