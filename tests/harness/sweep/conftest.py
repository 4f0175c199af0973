"""A tiny reference and the argument list of a tiny sweep, shared by the sweep's end-to-end tests.

The reference is a statistics file as nfebench writes it, with pool_3 features for KID (no
network named, so it pairs with the Inception weights installed here). The sweep samples N = 4
images per setting in batches and shards of 2 from rf-mini and biflow-mini with random weights
(8x8 pixels: the Inception features, about half a second per image on 2 cores, are its cost).
"""

from types import SimpleNamespace

import numpy as np
import pytest

N, BATCH = 4, 2


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    rng = np.random.default_rng(0)
    ref = tmp_path_factory.mktemp("ref") / "ref.npz"
    np.savez(ref, mu=rng.standard_normal(2048), sigma=np.eye(2048), n=np.int64(6),
             pool_features=rng.random((6, 2048), dtype=np.float32), mode=np.str_("adm"),
             format=np.str_("nfebench-stats-2"))
    return ref


def sweep_argv(ref, work_dir, out, *extra, models="rf-mini,biflow-mini",
               grid=("rf-mini:num_steps=1,2", "biflow-mini:guidance=0,1"), seed=0, n=N, shard=BATCH):
    """`nfebench sweep` of the tiny grid; `extra` appends (or, argparse's last wins, replaces) flags."""
    argv = ["sweep", "--models", models]
    for g in grid:
        argv += ["--grid", g]
    return argv + ["--num-samples", str(n), "--eval-batch-size", str(BATCH), "--shard-size", str(shard),
                   "--ref", str(ref), "--seed", str(seed), "--metrics", "fid,kid", "--batch-sizes", "1",
                   "--device", "cpu", "--max-time", "0.1", "--repeats", "5", "--no-calibration", "--no-progress",
                   "--work-dir", str(work_dir), "--out", str(out), *extra]


@pytest.fixture(scope="session")
def tiny():
    """The tiny sweep: `tiny.argv(...)` (`sweep_argv`), its N and its batch size."""
    return SimpleNamespace(argv=sweep_argv, n=N, batch=BATCH)
