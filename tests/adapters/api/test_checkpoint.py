import pytest
import torch
from torch import nn

from adapters.api.checkpoint import file_sha256, load_checkpoint, read_state_dict
from adapters.api.errors import InputError


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


class Unknown:
    """A class nfebench does not trust: a checkpoint that pickles one must not run it."""

    calls = 0

    def __setstate__(self, state):
        Unknown.calls += 1


def training_checkpoint(path, *, ema_scale=2.0):
    """What SiT's train.py saves: raw weights, EMA weights, optimizer state and argparse args."""
    import argparse

    raw = net()
    ema = {k: v * ema_scale for k, v in raw.state_dict().items()}
    opt = torch.optim.AdamW(raw.parameters())
    raw(torch.randn(2, 4)).sum().backward()
    opt.step()
    torch.save({"model": raw.state_dict(), "ema": ema, "opt": opt.state_dict(),
                "args": argparse.Namespace(model="SiT-XL/2", image_size=256)}, path)
    return raw.state_dict(), ema


def test_training_checkpoint_loads_its_ema_and_names_the_entry(tmp_path):
    from adapters.api.checkpoint import CheckpointRef

    path = tmp_path / "0400000.pt"
    raw, ema = training_checkpoint(path)
    dst = net()
    weights = load_checkpoint(dst, path)
    assert weights == file_sha256(path) + "#ema"
    assert torch.equal(dst.state_dict()["0.weight"], ema["0.weight"])
    weights = load_checkpoint(dst, CheckpointRef(path, entry="model"))
    assert weights == file_sha256(path) + "#model"
    assert torch.equal(dst.state_dict()["0.weight"], raw["0.weight"])
    with pytest.raises(InputError, match=r"no weights entry 'emma'; its entries: ema, model"):
        load_checkpoint(dst, CheckpointRef(path, entry="emma"))


def test_untrusted_classes_are_skipped_by_name_and_never_run(tmp_path):
    from adapters.api.checkpoint import CheckpointWarning

    path = tmp_path / "m.pt"
    torch.save({"model": net().state_dict(), "extra": Unknown()}, path)
    Unknown.calls = 0
    with pytest.warns(CheckpointWarning, match=r"skipped objects of classes .*Unknown"):
        sd = read_state_dict(path)
    assert Unknown.calls == 0 and set(sd) == set(net().state_dict())


def test_plain_state_dict_has_no_entries_and_several_raw_entries_need_a_choice(tmp_path):
    from adapters.api.checkpoint import CheckpointRef

    plain = tmp_path / "plain.pt"
    torch.save(net().state_dict(), plain)
    assert load_checkpoint(net(), plain) == file_sha256(plain)  # no '#entry' for a plain state_dict
    with pytest.raises(InputError, match="plain state_dict with no entries; ema='ema'"):
        read_state_dict(CheckpointRef(plain, entry="ema"))
    two = tmp_path / "two.pt"
    torch.save({"a": net().state_dict(), "b": net().state_dict()}, two)
    with pytest.raises(InputError, match=r"several weight entries \(a, b\); choose one with ema=KEY"):
        read_state_dict(two)
    assert set(read_state_dict(CheckpointRef(two, entry="b"))) == set(net().state_dict())


def test_ignored_and_renamed_keys_are_named(tmp_path):
    from adapters.api.checkpoint import CheckpointWarning

    path = tmp_path / "m.pt"
    sd = {f"net.{k}": v for k, v in net().state_dict().items()}
    sd["net.head.weight"] = torch.zeros(3)
    torch.save(sd, path)
    with pytest.warns(CheckpointWarning, match=r"ignored 1 tensors \(head.weight\): training only"):
        load_checkpoint(net(), path, rename=lambda k: k.removeprefix("net."), ignore=lambda k: k.startswith("head."),
                        ignore_reason="training only")
    with pytest.raises(InputError, match="unexpected tensors: head.weight"):
        load_checkpoint(net(), path, rename=lambda k: k.removeprefix("net."))


def test_load_sampler_passes_the_entry_and_refuses_ema_without_a_checkpoint(tmp_path, toy_family):
    from adapters import load_sampler

    path = tmp_path / "toy.pt"
    src = load_sampler(toy_family)
    torch.save({"model": src.net.state_dict(), "ema": src.net.state_dict()}, path)
    assert load_sampler(toy_family, checkpoint=str(path)).info.weights.endswith("#ema")
    assert load_sampler(toy_family, checkpoint=str(path), ema="model").info.weights.endswith("#model")
    with pytest.raises(InputError, match="no checkpoint was given"):
        load_sampler(toy_family, ema="model")
