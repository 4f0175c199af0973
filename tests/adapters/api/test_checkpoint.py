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


# Orbax checkpoint folders (a JAX TrainState as flax's save_checkpoint writes it), read without a target.


def save_orbax(folder, tree):
    """`tree` saved as an Orbax PyTree checkpoint folder by the installed orbax (OCDBT)."""
    ocp = pytest.importorskip("orbax.checkpoint")
    ocp.PyTreeCheckpointer().save(folder, tree)
    return folder


def train_state():
    """A TrainState-shaped tree of a new `net()`'s weights in flax's layout: kernels (in, out), nested names,
    the EMA at 2x the raw weights, Adam's moments and its empty (None) states, a step."""
    import numpy as np

    sd = net().state_dict()
    params = {"layers_0": {"kernel": sd["0.weight"].T.numpy(), "bias": sd["0.bias"].numpy()},
              "layers_1": {"kernel": sd["1.weight"].T.numpy(), "bias": sd["1.bias"].numpy()}}
    double = {k: {n: 2 * a for n, a in v.items()} for k, v in params.items()}
    zeros = {k: {n: np.zeros_like(a) for n, a in v.items()} for k, v in params.items()}
    return {"step": np.int64(40), "params": params, "ema_params": double,
            "opt_state": [{"count": np.int32(40), "mu": zeros, "nu": zeros}, None, None]}


def flax_to_torch(key):
    """``layers_0/kernel`` -> ``0.weight``: the Sequential's names."""
    return key.replace("layers_", "").replace("/kernel", ".weight").replace("/", ".")


def transpose_weights(sd):
    """Flax's Dense kernels (in, out), renamed to weights, as torch's (out, in)."""
    return {k: (v.T if k.endswith(".weight") else v) for k, v in sd.items()}


def test_orbax_folder_loads_its_ema_by_name_and_is_fingerprinted_over_its_files(tmp_path):
    from adapters.api.checkpoint import (
        CheckpointRef,
        folder_sha256,
        read_checkpoint,
        read_file,
    )

    tree = train_state()
    step = save_orbax(tmp_path / "run" / "checkpoint_40", tree)
    obj = read_file(step)
    assert set(obj) == {"step", "params", "ema_params", "opt_state"} and int(obj["step"]) == 40
    assert set(obj["opt_state"]) == {f"0/{m}/{k}" for m in ("mu", "nu") for k in
                                      ("layers_0/kernel", "layers_0/bias", "layers_1/kernel", "layers_1/bias")} | {"0/count"}
    for given in (step, tmp_path / "run"):  # the step folder, or the folder holding it
        sd, weights = read_checkpoint(given)
        assert weights == folder_sha256(step) + "#ema_params" and weights.startswith("folder-sha256:")
        assert torch.equal(sd["layers_1/kernel"], torch.from_numpy(tree["ema_params"]["layers_1"]["kernel"]))
    sd, weights = read_checkpoint(CheckpointRef(step, entry="params"))
    assert weights.endswith("#params") and torch.equal(sd["layers_0/bias"], torch.from_numpy(tree["params"]["layers_0"]["bias"]))
    dst = net()
    assert load_checkpoint(dst, step, rename=flax_to_torch, convert=transpose_weights).endswith("#ema_params")
    assert torch.equal(dst.state_dict()["0.weight"], torch.from_numpy(tree["ema_params"]["layers_0"]["kernel"]).T)


def test_the_highest_step_is_read_and_another_step_is_another_fingerprint(tmp_path):
    from adapters.api.checkpoint import folder_sha256, read_checkpoint

    save_orbax(tmp_path / "checkpoint_40", train_state())
    latest = train_state()
    save_orbax(tmp_path / "checkpoint_300", latest)  # flax keeps several; restore_checkpoint takes the latest
    (tmp_path / "checkpoint_900.orbax-checkpoint-tmp-1").mkdir()  # an unfinished save is not a step
    sd, weights = read_checkpoint(tmp_path)
    assert weights == folder_sha256(tmp_path / "checkpoint_300") + "#ema_params"
    assert weights != folder_sha256(tmp_path / "checkpoint_40") + "#ema_params"
    assert torch.equal(sd["layers_0/bias"], torch.from_numpy(latest["ema_params"]["layers_0"]["bias"]))


def test_bfloat16_leaves_are_read_exactly(tmp_path):
    import ml_dtypes
    import numpy as np

    from adapters.api.checkpoint import read_state_dict

    values = np.array([1.0, -0.333, 3.5e3, 1e-8], np.float32).astype(ml_dtypes.bfloat16)
    sd = read_state_dict(save_orbax(tmp_path / "checkpoint_1", {"params": {"w": values}}))
    assert sd["w"].dtype == torch.bfloat16 and sd["w"].float().tolist() == values.astype(np.float32).tolist()


def test_a_folder_without_a_checkpoint_names_what_it_looked_for(tmp_path):
    from adapters.api.checkpoint import read_state_dict

    (tmp_path / "notes.txt").write_text("no weights here")
    with pytest.raises(InputError, match=rf"checkpoint folder {tmp_path} holds no checkpoint: it is neither an Orbax "
                                         rf"checkpoint folder \(with _METADATA\) nor a folder holding checkpoint_<step>"):
        read_state_dict(tmp_path)


def test_without_orbax_a_folder_is_an_input_error_naming_the_extra(tmp_path, monkeypatch):
    import sys

    from adapters.api.checkpoint import read_state_dict

    (tmp_path / "_METADATA").write_text("{}")
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)  # import fails as if it were not installed
    monkeypatch.setitem(sys.modules, "orbax", None)
    with pytest.raises(InputError, match=r"reading it needs orbax-checkpoint .*pip install 'nfebench\[jax\]'"):
        read_state_dict(tmp_path)
