"""The shared training loop: seeded, resumable, checkpoints that are verified before use."""

import json

import pytest
import torch
from torch import nn

from harness.training import TrainConfig, check_checkpoint, save_checkpoint, sidecar, step_generator, train
from adapters.api.errors import InputError


def regression():
    """A linear model and a noisy least-squares objective drawing everything from the generator."""
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def loss(gen, batch):
        i = torch.randint(0, 64, (batch,), generator=gen)
        return (net(x[i]) - y[i] - 0.01 * torch.randn(batch, 1, generator=gen)).pow(2).mean()

    return net, loss


CONFIG = TrainConfig(steps=20, batch_size=8, lr=0.05, warmup=3, save_every=5)


class Interrupt(Exception):
    pass


def test_training_reduces_the_loss():
    net, loss = regression()
    with torch.no_grad():
        before = float(loss(step_generator(9, 0), 64))
    result = train(net, loss, TrainConfig(steps=200, batch_size=16, lr=0.05, warmup=5), progress=False)
    assert result.steps == 200 and result.resumed_from == 0
    with torch.no_grad():
        assert float(loss(step_generator(9, 0), 64)) < 0.01 * before


def test_an_interrupted_run_resumes_from_its_last_saved_step_to_the_same_weights(tmp_path):
    net, loss = regression()
    train(net, loss, CONFIG, progress=False)
    straight = [p.detach().clone() for p in net.parameters()]

    net, loss = regression()
    state = tmp_path / "run.state"

    def stop(done):
        if done == 12:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(net, loss, CONFIG, state_path=state, key="k", progress=False, on_step=stop)
    assert torch.load(state, weights_only=True)["step"] == 10  # the last multiple of save_every
    net, loss = regression()  # a fresh process: the weights in memory are lost
    messages = []
    result = train(net, loss, CONFIG, state_path=state, key="k", progress=False, log=messages.append)
    assert result.resumed_from == 10 and "resuming from step 10" in messages[0]
    assert not state.exists()  # finished: the state file is gone
    for a, b in zip(straight, net.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["truncate", "other-key"])
def test_an_unusable_saved_state_is_refused_with_a_message_and_training_restarts(tmp_path, damage):
    net, loss = regression()
    state = tmp_path / "run.state"
    with pytest.raises(Interrupt):
        train(net, loss, CONFIG, state_path=state, key="k", progress=False,
              on_step=lambda d: (_ for _ in ()).throw(Interrupt) if d == 6 else None)
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[:100])
    net, loss = regression()
    messages = []
    result = train(net, loss, CONFIG, state_path=state, key="k" if damage == "truncate" else "other",
                   progress=False, log=messages.append)
    assert result.resumed_from == 0
    assert ("unreadable" if damage == "truncate" else "another run") in messages[0]


def test_learning_rate_warms_up_then_decays_to_its_floor():
    c = TrainConfig(steps=100, lr=1.0, warmup=10, final_lr_frac=0.1)
    assert c.lr_at(0) == pytest.approx(0.1) and c.lr_at(9) == pytest.approx(1.0)
    assert c.lr_at(10) == pytest.approx(1.0) and c.lr_at(100) == pytest.approx(0.1)
    assert all(c.lr_at(s) >= c.lr_at(s + 1) for s in range(10, 100))


def test_bad_settings_are_input_errors():
    net, loss = regression()
    with pytest.raises(InputError, match="steps and batch_size"):
        train(net, loss, TrainConfig(steps=0), progress=False)
    with pytest.raises(InputError, match="no trainable parameters"):
        train(net.requires_grad_(False), loss, CONFIG, progress=False)


def test_checkpoints_are_used_only_when_their_sidecar_vouches_for_them(tmp_path):
    net = nn.Linear(3, 2)
    path = tmp_path / "m.pt"
    meta = {"model": "m", "steps": 10}
    assert "does not exist" in check_checkpoint(path, meta)
    digest = save_checkpoint(net, path, meta)
    assert json.loads(sidecar(path).read_text())["sha256"] == digest
    assert check_checkpoint(path, meta) is None
    assert "other settings (steps differ)" in check_checkpoint(path, {**meta, "steps": 20})
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    assert "is corrupt" in check_checkpoint(path, meta)
    sidecar(path).unlink()
    assert "no sidecar" in check_checkpoint(path, meta)
