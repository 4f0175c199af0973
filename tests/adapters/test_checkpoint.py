import pytest
import torch
from torch import nn

from adapters.checkpoint import file_sha256, load_checkpoint, read_state_dict
from harness.errors import InputError


def net():
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def test_round_trip_and_fingerprint(tmp_path):
    src = net()
    path = tmp_path / "m.pth"
    torch.save(src.state_dict(), path)
    dst = net()
    fingerprint = load_checkpoint(dst, path)
    assert fingerprint == file_sha256(path) and fingerprint.startswith("sha256:") and len(fingerprint) == 71
    for a, b in zip(src.parameters(), dst.parameters()):
        assert torch.equal(a, b)


def test_wrapped_state_dict_is_unwrapped(tmp_path):
    path = tmp_path / "m.pth"
    torch.save({"model": net().state_dict(), "step": torch.tensor(3)}, path)
    assert set(read_state_dict(path)) == set(net().state_dict())


def test_every_mismatch_is_named(tmp_path):
    sd = net().state_dict()
    del sd["0.bias"]
    sd["1.weight"] = torch.zeros(5, 3)
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(InputError) as err:
        load_checkpoint(net(), path)
    msg = str(err.value)
    assert "missing tensors: 0.bias" in msg
    assert "unexpected tensors: extra.weight" in msg
    assert "mis-shaped tensors: 1.weight (file (5, 3), model (2, 3))" in msg
    assert str(path) in msg


def test_unreadable_and_absent_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        read_state_dict(junk)
    with pytest.raises(InputError, match="does not exist"):
        read_state_dict(tmp_path / "absent.pth")


def test_meta_module_is_materialised_by_loading(tmp_path):
    path = tmp_path / "m.pth"
    torch.save(net().state_dict(), path)
    with torch.device("meta"):
        m = net()
    load_checkpoint(m, path)
    assert not any(p.is_meta for p in m.parameters())
