"""`harness.workdir`: shard layout, manifest checks, which shard files count as done."""

import json

import numpy as np
import pytest

from adapters.api.errors import InputError
from harness.workdir import MANIFEST, WorkDir, shard_ranges


def test_shard_ranges_cover_every_index_once():
    shards = shard_ranges(10, 4)
    assert shards == [range(0, 4), range(4, 8), range(8, 10)]
    assert [i for r in shards for i in r] == list(range(10))
    with pytest.raises(InputError, match="--shard-size must be a positive integer"):
        shard_ranges(10, 0)


def test_manifest_is_written_then_enforced(tmp_path):
    path = tmp_path / "run"
    settings = {"model": "tarflow", "seed": 0, "num_samples": 8, "metrics": ("fid", "pr"), "guidance": None}
    WorkDir(path, settings).open()
    stored = json.loads((path / MANIFEST).read_text())
    assert stored["seed"] == 0 and stored["metrics"] == ["fid", "pr"] and stored["format"] == "nfebench-workdir-2"
    WorkDir(path, settings).open()  # the same settings (tuples as JSON lists): accepted
    with pytest.raises(InputError) as err:
        WorkDir(path, {**settings, "seed": 1, "num_samples": 16}).open()
    message = str(err.value)
    assert "num_samples: 8 there, 16 now" in message and "seed: 0 there, 1 now" in message
    assert "model" not in message.split("other settings")[1]  # only the differing ones are named
    with pytest.raises(InputError, match="absent"):
        WorkDir(path, {**settings, "extra": 1}).open()


def test_foreign_or_damaged_directories(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty and has no manifest.json"):
        WorkDir(other, {}).open()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        WorkDir(tmp_path / "file", {}).open()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        WorkDir(broken, {}).open()


def test_done_trusts_only_complete_shard_files(tmp_path):
    wd = WorkDir(tmp_path / "run", {"seed": 0})
    wd.open()
    shards = shard_ranges(5, 2)
    wd.write_shard(0, {"start": np.int64(0), "count": np.int64(2), "pool": np.ones((2, 3), np.float32)})
    wd.write_shard(1, {"start": np.int64(2), "count": np.int64(1), "pool": np.ones((1, 3), np.float32)})  # short
    wd.shard_path(2).write_bytes(b"half a zip")  # damaged: redone
    assert wd.done(shards) == [True, False, False]
    wd.write_shard(1, {"start": np.int64(0), "count": np.int64(2), "pool": np.ones((2, 3), np.float32)})
    assert wd.done(shards)[1] is False  # another shard's samples
    np.testing.assert_array_equal(wd.read_shard(0)["pool"], np.ones((2, 3), np.float32))
    assert wd.result() is None
    wd.write_result({"values": [], "skipped": [], "context": {}})
    assert wd.result() == {"values": [], "skipped": [], "context": {}}
    assert not list((tmp_path / "run").rglob("*.tmp"))  # atomic writes leave no temporaries
