"""BiFlow's reverse model G (adapters/biflow/model.py)."""

import doctest

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adapters import biflow, load_sampler, model_info
from adapters.api.errors import InputError
from adapters.api.registry import get_spec
from adapters.base import count_params
from adapters.biflow.model import AlignmentHeads, BiFlowNet, stage_sizes

from ..checkpoint_files import save

TINY = dict(hidden_size=32, depth=4, num_heads=2, num_stages=3, input_size=8, num_classes=10)
LABELS = torch.tensor([0, 3, 9, 4])


def _noise(n=4, seed=0):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _tiny(**overrides):
    s = load_sampler("biflow-b2", **{**TINY, **overrides})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero adaLN weights, so labels and guidance reach the output
        for p in s.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return s


def _count_calls(net):
    batches = []
    net.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    return batches


def test_shape_and_determinism():
    s = _tiny()
    z = _noise()
    out = s.generate(z, LABELS)
    assert out.shape == z.shape
    torch.testing.assert_close(s.generate(z.clone(), LABELS.clone()), out, rtol=0, atol=0)


def test_random_init_is_not_degenerate():
    s = load_sampler("biflow-b2", **TINY)  # untouched init
    out = s.generate(_noise(), LABELS)
    assert out.std() > 0.1
    assert (out[0] - out[1]).abs().mean() > 0.1  # different noise, different sample


def test_output_does_not_depend_on_batch_composition():
    s = _tiny()
    z = _noise()
    full = s.generate(z, LABELS, guidance=1.0)
    for i in range(4):
        alone = s.generate(z[i:i + 1], LABELS[i:i + 1], guidance=1.0)
        torch.testing.assert_close(alone, full[i:i + 1], atol=1e-5, rtol=1e-5)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(s.generate(z[perm], LABELS[perm], guidance=1.0), full[perm], atol=1e-5, rtol=1e-5)


def test_attention_is_bidirectional():
    s = _tiny()
    z = _noise(1)
    z2 = z.clone()
    z2[:, :, -2:, -2:] += 1.0  # only the last token's patch changes
    a, b = s.generate(z, LABELS[:1]), s.generate(z2, LABELS[:1])
    assert (a[:, :, :2, :2] - b[:, :, :2, :2]).abs().max() > 1e-4  # ... and the first token's output moves


def test_guidance_enters_through_the_embedding_in_one_pass():
    s = _tiny()
    z = _noise()
    calls = _count_calls(s.net)
    a = s.generate(z, LABELS, guidance=0.0)
    b = s.generate(z, LABELS, guidance=2.0)
    assert calls == [4, 4]  # one evaluation per image, guided or not
    assert (a - b).abs().max() > 1e-3
    with torch.no_grad():
        direct = s.net(z, LABELS, torch.full((4,), 2.0))
    torch.testing.assert_close(b, direct, rtol=0, atol=0)
    torch.testing.assert_close(s.generate(z, LABELS), a)  # config default guidance is 0
    seen = []
    s.net.g_embedder.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    s.generate(z, LABELS, guidance=1.25)
    assert seen[0].tolist() == [1.25] * 4


def test_labels_change_the_output_and_none_is_the_null_class():
    s = _tiny()
    z = _noise()
    assert (s.generate(z, LABELS) - s.generate(z, (LABELS + 1) % 10)).abs().max() > 1e-3
    with torch.no_grad():
        null = s.net(z, torch.full((4,), 10), torch.zeros(4))
    torch.testing.assert_close(s.generate(z, None), null, rtol=0, atol=0)
    with pytest.raises(InputError, match="needs class labels"):
        s.generate(z, None, guidance=1.0)


def test_stage_sizes():
    assert stage_sizes(12, 8) == [2, 2, 2, 2, 1, 1, 1, 1]
    assert stage_sizes(28, 6) == [5, 5, 5, 5, 4, 4]
    assert stage_sizes(12, 4) == [3, 3, 3, 3]
    with pytest.raises(InputError, match="num_stages must lie in"):
        stage_sizes(4, 5)
    with pytest.raises(InputError, match="num_stages must lie in"):
        model_info("biflow-b2", **{**TINY, "num_stages": 0})


@pytest.mark.parametrize("student,teacher", [("biflow-b2", "itarflow-b2"), ("biflow-xl2", "itarflow-xl2")])
def test_one_stage_per_teacher_block(student, teacher):
    # The full-size net on the meta device: the forward returns one state per teacher flow block.
    net = load_sampler(student, device="meta").net
    with torch.device("meta"):
        z, y, g = torch.empty(1, 4, 32, 32), torch.zeros(1, dtype=torch.long), torch.empty(1)
    _, stages = net(z, y, g, return_stages=True)
    assert len(stages) == get_spec(teacher).config.num_blocks
    assert all(st.shape == (1, 256, net.x_embedder.out_features) for st in stages)


def test_stage_states_are_the_trunk_outputs_at_stage_ends():
    s = _tiny()
    net = s.net
    z = _noise()
    block_outputs = []
    for blk in net.blocks:
        blk.register_forward_hook(lambda m, args, out: block_outputs.append(out))
    with torch.no_grad():
        out, stages = net(z, LABELS, torch.ones(4), return_stages=True)
        plain = net(z, LABELS, torch.ones(4))
    assert len(stages) == 3 == net.num_stages
    assert all(st.shape == (4, 16, 32) for st in stages)  # (N, T, D)
    for st, end in zip(stages, [1, 2, 3]):  # stage_sizes(4, 3) == [2, 1, 1]
        torch.testing.assert_close(st, block_outputs[end], rtol=0, atol=0)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)


def test_alignment_heads_shapes_and_not_counted():
    s = _tiny()
    heads = AlignmentHeads.for_net(s.net)
    with torch.no_grad():
        _, stages = s.net(_noise(), LABELS, torch.zeros(4), return_stages=True)
    preds = heads(stages)
    assert [p.shape for p in preds] == [(4, 16, 16)] * 3  # token width C*p*p = 16, as the teacher's
    assert s.info.params == count_params(s.net)
    assert not any(isinstance(m, AlignmentHeads) for m in s.net.modules())
    assert count_params(heads) == 3 * (32 * 16 + 16)
    with pytest.raises(ValueError, match="2 stage states for 3 alignment heads"):
        heads(stages[:2])


def test_checkpoint_round_trip(tmp_path):
    s = _tiny()
    path = save(tmp_path, s.net.state_dict(), "g.pt")
    assert not any(k.startswith("rope_") for k in s.net.state_dict())  # derived tables are not saved
    loaded = load_sampler("biflow-b2", checkpoint=path, **TINY)
    assert loaded.info.weights.startswith("sha256:")
    z = _noise()
    torch.testing.assert_close(loaded.generate(z, LABELS, guidance=0.5), s.generate(z, LABELS, guidance=0.5),
                               rtol=0, atol=0)


def test_misshaped_checkpoint_names_the_tensor(tmp_path):
    sd = load_sampler("biflow-b2", **TINY).net.state_dict()
    sd["head.weight"] = torch.zeros(4, 32)
    with pytest.raises(InputError, match=r"mis-shaped tensors: head\.weight \(file \(4, 32\), model \(16, 32\)\)"):
        load_sampler("biflow-b2", checkpoint=save(tmp_path, sd, "bad.pt"), **TINY)


def test_bad_inputs_are_input_errors():
    s = load_sampler("biflow-b2", **TINY)
    with pytest.raises(InputError, match="labels must lie in"):
        s.generate(_noise(), torch.tensor([0, 1, 2, -1]))
    with pytest.raises(InputError, match=r"expected \(N, 4, 8, 8\)"):
        s.generate(torch.randn(4, 3, 8, 8), LABELS)
    with pytest.raises(InputError, match="guidance must be a finite number"):
        s.generate(_noise(), LABELS, guidance=float("inf"))
    with pytest.raises(InputError, match="divisible by 4"):
        model_info("biflow-b2", **{**TINY, "num_heads": 16})  # head dim 2: no 2-D RoPE
    with pytest.raises(InputError, match="integer divisible by 4"):
        model_info("biflow-b2", **{**TINY, "num_heads": 3})
    with pytest.raises(InputError, match="unknown option"):
        s.generate(_noise(), LABELS, steps=2)


def test_info():
    info = model_info("biflow-b2", **TINY)
    assert (info.nfe, info.sequential_steps, info.space, info.sample_shape, info.family) == \
        (1, 1, "latent", (4, 8, 8), "biflow")
    assert model_info("biflow-b2", **TINY, guidance=2.0).nfe == 1


# BiFlow-B/2: 133M (arXiv 2512.10953). The paper gives no XL figure: ours follows DiT-XL/2's shape,
# so it is checked against DiT-XL/2's 675M (arXiv 2212.09748). Meta device: nothing allocated.
@pytest.mark.parametrize("model,published", [("biflow-b2", 133e6), ("biflow-xl2", 675e6)])
def test_param_counts(model, published):
    assert model_info(model).params == pytest.approx(published, rel=0.03)


@pytest.mark.parametrize("size", ["tiny", "b2"])
def test_gflops_formula_matches_flop_counter(size):
    cfg = dict(input_size=8, hidden_size=64, depth=3, num_heads=4, num_stages=2, num_classes=10) \
        if size == "tiny" else {}
    with torch.device("meta"):  # CPU SDPA kernels are invisible to FlopCounterMode; meta ones are not
        net = BiFlowNet(**cfg)
        z = torch.empty(2, 4, net.input_size, net.input_size)
        y, g = torch.zeros(2, dtype=torch.long), torch.empty(2)
    with FlopCounterMode(display=False) as counter:
        net(z, y, g)
    assert net.flops() == pytest.approx(counter.get_total_flops() / 2, rel=0.02)
    if size == "b2":
        assert model_info("biflow-b2").gflops == pytest.approx(net.flops() / 1e9)


def test_docstring_examples_run():
    assert doctest.testmod(biflow).failed == 0
