"""`nfebench eval` sharded, distributed and resumed, end to end on a tiny TARFlow (``--set``).

One uninterrupted single-process run is the baseline; a two-rank torchrun (gloo, another
batch size), two JAX processes joined by jax.distributed, a run killed with SIGKILL and
resumed (another batch size again), and a rerun of the finished run must all give the same
statistics, compared bit for bit: features are
batch-invariant on this CPU (checked here) and shards are merged in shard order, so no
tolerance is needed. Every process runs one intra-op thread (torchrun's default): Inception
features on the CPU change with the thread count (measured: up to 5e-7 relative, float32
rounding), not with the batch size. Inception costs about half a second per image: N is 8.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from adapters import load_sampler
from harness import results
from harness.cli import main
from harness.evaluate import generate_images
from harness.metrics.inception import InceptionFeatures
from harness.results import read_run
from adapters.api.seeding import sample_labels
from harness.workdir import RESULT, STATS

N, SHARD = 8, 4
TINY = "img_size=8,in_channels=3,patch_size=2,channels=32,head_dim=16,num_blocks=1,layers_per_block=1,num_classes=10"
STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s", "pool_features", "n")

pytestmark = pytest.mark.slow


def eval_argv(ref, out, work_dir, batch_size, *extra, n=N, shard=SHARD):
    return ["eval", "--model", "tarflow", "--set", TINY, "--num-samples", str(n), "--shard-size", str(shard),
            "--ref", str(ref), "--seed", "0", "--metrics", "fid,sfid,pr", "--batch-size", str(batch_size),
            "--work-dir", str(work_dir), "--out", str(out), *extra]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread here and in every subprocess, as torchrun gives each rank."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Reference statistics (nfebench format, with sFID statistics and pool_3 features)."""
    rng = np.random.default_rng(0)
    ref = tmp_path_factory.mktemp("ref") / "ref.npz"
    np.savez(ref, mu=rng.standard_normal(2048), sigma=np.eye(2048), mu_s=rng.standard_normal(2023),
             sigma_s=np.eye(2023), pool_features=rng.random((6, 2048), dtype=np.float32), n=np.int64(6),
             mu_dinov2=rng.standard_normal(1024) * 0.1, sigma_dinov2=np.eye(1024) * 0.1,
             mode=np.str_("adm"), format=np.str_("nfebench-stats-2"))  # no network: synthetic numbers
    return ref


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, reference):
    """One uninterrupted single-process run (batch size 4)."""
    root, ref = tmp_path_factory.mktemp("eval"), reference
    argv = eval_argv(ref, root / "base.csv", root / "base", 4)
    assert main(argv) == 0
    return {"root": root, "argv": argv, "work": root / "base", "rows": read_run(root / "base.csv")}


def assert_same_statistics(a, b):
    sa, sb = np.load(a / STATS), np.load(b / STATS)
    for key in STAT_KEYS:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)
    assert json.loads((a / RESULT).read_text())["values"] == json.loads((b / RESULT).read_text())["values"]


def test_features_are_batch_invariant_on_this_cpu():
    """What bit-for-bit identity across batch sizes rests on: the same image gives the same
    Inception features whatever batch it is in (and tiny TARFlow the same images)."""
    sampler = load_sampler("tarflow", **{k: int(v) for k, v in (kv.split("=") for kv in TINY.split(","))})
    whole = torch.cat([x for x, _ in generate_images(sampler, 3, 3, seed=0)])  # (3, 3, 8, 8)
    parts = torch.cat([x for x, _ in generate_images(sampler, 3, 2, seed=0)])
    assert torch.equal(whole, parts)
    inc = InceptionFeatures()
    f3 = inc(whole)
    f1 = [inc(whole[i:i + 1]) for i in range(3)]
    for key in ("pool", "spatial"):
        torch.testing.assert_close(f3[key], torch.cat([f[key] for f in f1]), rtol=0, atol=0)


def test_torchrun_two_ranks_equal_one_process(baseline, reference):
    root = baseline["root"]
    argv = eval_argv(reference, root / "dist.csv", root / "dist", 3)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "harness.cli",
           *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One progress bar (rank 0's), counting the images of both ranks, with a rate.
    assert proc.stderr.count("eval tarflow:   0%") == 1 and f"{N}/{N} [" in proc.stderr and "img/s" in proc.stderr
    assert_same_statistics(baseline["work"], root / "dist")
    rows = read_run(root / "dist.csv").set_index("metric")  # rank 0 alone wrote rows: one per metric
    base = baseline["rows"].set_index("metric")
    assert sorted(rows.index) == sorted(base.index) == sorted([results.FID, results.SFID, results.PRECISION,
                                                               results.RECALL])
    for metric in rows.index:
        assert rows.loc[metric, "value"] == base.loc[metric, "value"], metric
    # The settings regress pairs rows on are the same; the notes say how the run was split.
    assert rows.loc[results.FID, "config"] == base.loc[results.FID, "config"]
    assert json.loads(rows.loc[results.FID, "config"])["num_blocks"] == 1  # --set reached the sampler
    assert f"2 process(es), shards of {SHARD}" in rows.loc[results.FID, "notes"]
    assert f"1 process(es), shards of {SHARD}" in base.loc[results.FID, "notes"]


@pytest.fixture(scope="module")
def jax_baseline(baseline, reference):
    """The baseline's run with the generator on JAX (--backend jax), one process, batch 4."""
    root = baseline["root"]
    assert main(eval_argv(reference, root / "jax1.csv", root / "jax1", 4, "--backend", "jax")) == 0
    return {"work": root / "jax1", "rows": read_run(root / "jax1.csv")}


def test_jax_backend_matches_the_torch_run(baseline, jax_baseline):
    """The Flax port of the same weights gives the same metrics (its samples agree with
    torch's to ~1e-6 before uint8 quantisation), and its rows say backend=jax."""
    rows, base = jax_baseline["rows"].set_index("metric"), baseline["rows"].set_index("metric")
    assert set(rows.backend) == {"jax"} and set(base.backend) == {"torch"} and set(rows.device) == {"cpu"}
    for metric in base.index:
        assert rows.loc[metric, "value"] == pytest.approx(base.loc[metric, "value"], rel=1e-4), metric


def test_jax_multi_process_run_equals_one_process(jax_baseline, baseline, reference):
    """The same run as two JAX processes (jax.distributed on the CPU, as on a TPU pod's
    hosts), sampling with the JAX back-end, equals the one-process JAX run bit for bit."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = baseline["root"]
    argv = eval_argv(reference, root / "jax.csv", root / "jax", 2, "--backend", "jax")
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "NFEBENCH_JAX_DISTRIBUTED": "1", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(rank), "JAX_PLATFORMS": "cpu"}
        procs.append(subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    assert_same_statistics(jax_baseline["work"], root / "jax")
    assert "2 process(es)" in read_run(root / "jax.csv")["notes"][0] and "wrote" not in outs[1]


def test_killed_run_resumes_to_identical_statistics(baseline, reference):
    root = baseline["root"]
    work, samples = root / "killed", root / "samples.npz"
    argv = eval_argv(reference, root / "killed.csv", work, 2, "--save-samples", str(samples))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((work / "shards").glob("*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = sorted((work / "shards").glob("*.npz"))
    assert len(first) == 1 and not (work / RESULT).exists() and not samples.exists(), \
        "the kill did not land mid-run; the test proves nothing"
    before = first[0].stat()

    assert main(argv) == 0  # the same command again
    after = first[0].stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # the finished shard was kept
    assert_same_statistics(baseline["work"], work)
    # The samples file, assembled from shards of two processes, is the images of one batch of N.
    saved = np.load(samples)
    sampler = load_sampler("tarflow", **{k: int(v) for k, v in (kv.split("=") for kv in TINY.split(","))})
    direct = torch.cat([x for x, _ in generate_images(sampler, N, N, seed=0)]).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(saved["arr_0"], direct)
    np.testing.assert_array_equal(saved["arr_1"], sample_labels(0, range(N), 10).numpy())


def test_finished_run_is_not_redone_and_mismatch_is_refused(baseline, capsys):
    work, argv = baseline["work"], baseline["argv"]
    stamps = {p: p.stat().st_mtime_ns for p in (work / "shards").glob("*.npz")}
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "nothing was recomputed" in err
    assert {p: p.stat().st_mtime_ns for p in (work / "shards").glob("*.npz")} == stamps
    rows = read_run(argv[argv.index("--out") + 1])
    assert len(rows) == 2 * len(baseline["rows"])
    assert list(rows["value"][len(baseline["rows"]):]) == list(baseline["rows"]["value"])

    changed = list(argv)
    changed[changed.index("--seed") + 1] = "1"
    changed[changed.index("--num-samples") + 1] = "12"
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "seed: 0 there, 1 now" in err and "num_samples: 8 there, 12 now" in err and "new --work-dir" in err
    other_model = list(argv)
    other_model[other_model.index("--set") + 1] = TINY.replace("num_blocks=1", "num_blocks=2")
    assert main(other_model) == 2
    assert "overrides:" in capsys.readouterr().err


FAILING = textwrap.dedent("""
    import os, sys
    from dataclasses import dataclass
    import torch
    from adapters.api import registry
    from adapters.base import TorchSampler, count_params
    from harness.cli import main
    from adapters.api.sampler import RANDOM_INIT, ModelInfo

    class Failing(TorchSampler):
        def _generate(self, noise, labels, guidance):
            if os.environ["RANK"] == "1":
                raise RuntimeError("sampler exploded on rank 1")
            return torch.tanh(self.net(noise))  # (N, 3, 8, 8)

    def build(name, config, *, checkpoint, device, dtype):
        net = torch.nn.Conv2d(3, 3, 1).to(device, dtype)
        info = ModelInfo(name=name, family="toy", params=count_params(net), nfe=1, sequential_steps=1,
                         space="pixel", sample_shape=(3, 8, 8), image_size=8, num_classes=0, gflops=0.0,
                         weights=RANDOM_INIT)
        return Failing(info, net, device=device, dtype=dtype)

    @dataclass(frozen=True)
    class Config:
        size: int = 8

    registry.register("toy-failing", family="toy", config=Config(), build=build)
    sys.exit(main())
""")


def test_a_failing_rank_fails_the_run_without_hanging(reference, tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), "eval",
           "--model", "toy-failing", "--num-samples", "4", "--shard-size", "2", "--batch-size", "2",
           "--ref", str(reference), "--seed", "0", "--out", str(tmp_path / "run.csv")]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert time.monotonic() - start < 120
    assert "error (rank 0): rank 1 of 2 failed with RuntimeError: sampler exploded on rank 1" in proc.stderr
    # Rank 0 shows rank 1's traceback (on another node, the only copy in this terminal).
    shown = proc.stderr.split("traceback of the failed rank:")[1]
    assert "in _generate" in shown and "RuntimeError: sampler exploded on rank 1" in shown
    assert not (tmp_path / "run.csv").exists()


def test_dinov2_features_and_kid_merge_the_same_on_two_ranks(baseline, reference, dinov2_weights):
    """FD-DINOv2's statistics and KID's pool_3 features travel through shards and the torchrun
    exchange like Inception's: two ranks give the one-process numbers, bit for bit. Four images
    (fewer have no intervals) in shards of two, one per rank: a ViT-L/14 pass costs about two
    seconds per image on one thread here."""
    root = baseline["root"]
    extra = ("--metrics", "fid,fd_dinov2,kid", "--dinov2-weights", str(dinov2_weights))  # the last --metrics counts

    def argv(name, batch_size):
        return eval_argv(reference, root / f"{name}.csv", root / name, batch_size, *extra, n=4, shard=2)

    assert main(argv("dino1", 2)) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "harness.cli",
           *argv("dino2", 1)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = np.load(root / "dino1" / STATS), np.load(root / "dino2" / STATS)
    for key in ("mu", "sigma", "mu_dinov2", "sigma_dinov2", "pool_features", "n"):
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    assert json.loads((root / "dino1" / RESULT).read_text())["values"] == \
        json.loads((root / "dino2" / RESULT).read_text())["values"]
    rows = read_run(root / "dino2.csv").set_index("metric")
    assert sorted(rows.index) == sorted([results.FID, results.FD_DINOV2, results.KID])
    assert (rows["ci_high"] > rows["ci_low"]).all()


def test_rows_carry_the_nfe_of_the_guidance_that_ran(tmp_path, reference):
    """--guidance 0.5 on a Rectified Flow adds the unconditional pass (NFE 1 -> 2), whatever the
    config's default guidance; TARFlow's convention: +1 for guidance, +1 for the denoising step."""
    ref = reference
    nfe = {}
    for model, guidance in (("rf-mini", None), ("rf-mini", 0.5), ("tarflow-mini", None), ("tarflow-mini", 1.0)):
        out = tmp_path / f"{model}-{guidance}.csv"
        argv = ["eval", "--model", model, "--num-samples", "2", "--batch-size", "2", "--seed", "0", "--ref", str(ref),
                "--metrics", "fid", "--out", str(out)] + ([] if guidance is None else ["--guidance", str(guidance)])
        assert main(argv) == 0
        nfe[model, guidance] = int(read_run(out).nfe.iloc[0])
    assert nfe == {("rf-mini", None): 1, ("rf-mini", 0.5): 2, ("tarflow-mini", None): 2, ("tarflow-mini", 1.0): 3}
