"""`harness.distributed`: dealing shards to ranks, failure propagation, and a real two-process
JAX run on the CPU (the torchrun path is exercised end to end in tests/harness/commands/test_eval.py)."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from harness.distributed import (Failure, RankFailed, World, distributed_world, rounds, run_and_exchange,
                                 run_on_root)


def test_rounds_deal_every_shard_once_and_pad_the_last_round():
    assert rounds([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4, None]]
    assert rounds([3, 7], 4) == [[3, 7, None, None]]
    assert rounds([], 3) == []
    dealt = [s for r in rounds(list(range(11)), 3) for s in r if s is not None]
    assert dealt == list(range(11))


def test_single_process_world(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "NFEBENCH_JAX_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    with distributed_world(torch.device("cpu")) as (world, device):
        assert (world.rank, world.size, world.backend, world.is_root, device) == (0, 1, "none", True, torch.device("cpu"))
        assert run_and_exchange(world, lambda: {"a": 1}) == [{"a": 1}]


def test_a_failing_rank_stops_the_others_with_its_error():
    def statuses_with_failed_rank_1(obj):
        return [obj, Failure(1, "ValueError", "generate blew up", "Traceback ...")]

    world = World(rank=0, size=2, allgather_fn=statuses_with_failed_rank_1)
    with pytest.raises(RankFailed, match="rank 1 of 2 failed with ValueError: generate blew up"):
        run_and_exchange(world, lambda: "fine")
    # The failing rank sends its error, then raises its own exception.
    sent = []
    own = World(rank=1, size=2, allgather_fn=lambda obj: sent.append(obj) or [None, obj])
    with pytest.raises(KeyError, match="mine"):
        run_and_exchange(own, lambda: {}["mine"])
    assert isinstance(sent[0], Failure) and sent[0].rank == 1 and "KeyError" in sent[0].trace
    # Work that only rank 0 does (reading the work dir) stops everyone when it fails there.
    with pytest.raises(RankFailed, match="rank 1 of 2"):
        run_on_root(World(rank=0, size=2, allgather_fn=statuses_with_failed_rank_1), lambda: 1)
    answers = iter([[None, None], [{"done": [True]}, None]])  # statuses, then rank 0's result
    shared = World(rank=1, size=2, allgather_fn=lambda obj: next(answers))
    assert run_on_root(shared, lambda: pytest.fail("runs on rank 0 only")) == {"done": [True]}


def test_results_go_to_rank_0_only():
    root = World(rank=0, size=2, allgather_fn=lambda obj: [obj, None], gather_fn=lambda obj: [obj, "from 1"])
    assert run_and_exchange(root, lambda: "from 0") == ["from 0", "from 1"]
    other = World(rank=1, size=2, allgather_fn=lambda obj: [None, obj])
    assert run_and_exchange(other, lambda: "from 1") is None  # gathered through allgather, kept on rank 0


SCRIPT = textwrap.dedent("""
    import jax, torch
    from harness.distributed import RankFailed, distributed_world, run_and_exchange, run_on_root
    with distributed_world(torch.device("cpu")) as (world, _):
        assert (world.rank, world.size) == (jax.process_index(), jax.process_count()), world
        parts = run_and_exchange(world, lambda: {"rank": world.rank, "data": list(range(world.rank + 2))})
        print("parts", world.backend, world.rank, world.size, parts, flush=True)
        print("shared", world.rank, run_on_root(world, lambda: [7, world.rank]), flush=True)
        def work():
            if world.rank == 1:
                raise ValueError("rank 1 broke")
            return "ok"
        try:
            run_and_exchange(world, work)
        except RankFailed as exc:
            print("stopped", world.rank, exc, flush=True)
        except ValueError as exc:
            print("own", world.rank, exc, flush=True)
""")


@pytest.mark.slow
def test_jax_multi_process_exchange(tmp_path):
    """Two JAX processes on the CPU, joined by jax.distributed: rank and size come from JAX,
    payloads of different lengths are exchanged, a failure on rank 1 stops rank 0."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "jax_world.py"
    script.write_text(SCRIPT)
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "NFEBENCH_JAX_DISTRIBUTED": "1", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(rank), "JAX_PLATFORMS": "cpu"}
        env.pop("WORLD_SIZE", None)
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    expected = "[{'rank': 0, 'data': [0, 1]}, {'rank': 1, 'data': [0, 1, 2]}]"
    assert f"parts jax 0 2 {expected}" in outs[0] and "parts jax 1 2 None" in outs[1], outs
    for rank, out in enumerate(outs):
        assert f"shared {rank} [7, 0]" in out, out
    assert "stopped 0 rank 1 of 2 failed with ValueError: rank 1 broke" in outs[0]
    assert "own 1 rank 1 broke" in outs[1]
