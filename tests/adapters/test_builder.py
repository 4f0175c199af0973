"""adapters/builder.py: a network that a checkpoint overwrites is built without drawing its weights."""

import doctest

import pytest
import torch
from torch import nn

from adapters import builder, load_sampler
from adapters.builder import skip_init


def test_docstring_examples_run():
    assert doctest.testmod(builder).failed == 0


def test_skip_init_leaves_tensors_as_allocated_and_restores_the_initialisers():
    before = torch.random.get_rng_state()
    with skip_init():
        layer = nn.Linear(3, 2, device="meta")
        w = nn.init.xavier_uniform_(torch.full((2, 2), 7.0))
    assert torch.equal(torch.random.get_rng_state(), before)  # nothing drawn
    assert layer.weight.is_meta and torch.equal(w, torch.full((2, 2), 7.0))
    with pytest.raises(RuntimeError), skip_init():
        raise RuntimeError("a failed build")
    assert nn.init.normal_(torch.zeros(100)).std() > 0  # restored, even after the failure


def test_a_checkpointed_build_draws_nothing_and_holds_the_file(tmp_path, monkeypatch):
    """rf-mini (flowmatch) from a file of other weights: the load, not an initialiser, gave every tensor."""
    source = load_sampler("rf-mini")
    sd = {k: v + 0.5 for k, v in source.net.state_dict().items()}
    torch.save(sd, tmp_path / "rf.pt")
    calls = []
    for name in ("xavier_uniform_", "kaiming_uniform_", "normal_", "constant_"):
        real = getattr(nn.init, name)
        monkeypatch.setattr(nn.init, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    load_sampler("rf-mini")
    assert calls  # a random-weight build initialises
    calls.clear()
    loaded = load_sampler("rf-mini", str(tmp_path / "rf.pt"))
    assert calls == []
    for key, value in loaded.net.state_dict().items():
        assert torch.equal(value, sd[key]), key
