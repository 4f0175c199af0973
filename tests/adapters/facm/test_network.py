"""LightningDiT (adapters/facm/network.py) against FACM's own module (github:ali-vilab/FACM, never committed):
sizes, names, FLOPs, the EVA rope tables and the forward, with random non-zero weights."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adapters import load_sampler, model_info
from adapters.api.errors import InputError
from adapters.facm import network
from adapters.facm.network import (
    ROPE_KEYS,
    check_rope_tables,
    eva_rope_tables,
    released_key,
)

TINY = dict(hidden_size=64, depth=2, num_heads=4)  # the `reference_dit` fixture's default sizes (1000 classes)
XL_PARAMS = 675_260_768  # test.py's "Model parameters" log of LightningDiT-XL/1, the frozen pos_embed included
TOL = 1e-4


def rel_dev(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


def loaded(net, **overrides):
    """nfebench's LightningDiT holding `net`'s weights (through the checkpoint layout's key map)."""
    ours = load_sampler("facm-xl1", device="meta", **overrides).net
    sd = check_rope_tables({released_key(k): v for k, v in net.state_dict().items()}, ours.head_dim, ours.grid, "ref")
    ours.load_state_dict(sd, strict=True, assign=True)
    return ours


def test_param_count_and_keys_equal_the_official_module(ref):
    """XL/1 on the meta device, built by model_manager.py from lightningdit.yaml as test.py builds it."""
    with torch.device("meta"):
        theirs = ref.manager.ModelManager(str(ref.root / "ldit" / "lightningdit.yaml")).load_dit()
    count = sum(p.numel() for p in theirs.parameters())
    print(f"facm-xl1: {model_info('facm-xl1').params:,} parameters here, {count:,} in FACM's module")
    assert model_info("facm-xl1").params == count == XL_PARAMS
    assert (theirs.patch_size, len(theirs.blocks), theirs.hidden_size, theirs.num_heads) == (1, 28, 1152, 16)
    ours = load_sampler("facm-xl1", device="meta").net.state_dict()
    file_keys = {released_key(k): tuple(v.shape) for k, v in theirs.state_dict().items() if k not in ROPE_KEYS}
    assert {k: tuple(v.shape) for k, v in ours.items()} == file_keys
    assert tuple(ours["blocks.0.mlp.fc1.weight"].shape) == (2 * 3072, 1152)  # SwiGLU hidden 3072, fused gate|value
    assert tuple(ours["y_embedder.embedding_table.weight"].shape) == (1001, 1152)  # the null row
    assert "r_embedder.mlp.0.weight" not in file_keys  # auxiliary_time_cond false


def test_gflops_are_the_official_forward(ref):
    with torch.device("meta"):
        theirs = ref.manager.ModelManager(str(ref.root / "ldit" / "lightningdit.yaml")).load_dit()
        x, t = torch.empty(1, 32, 16, 16), torch.empty(1)
        with FlopCounterMode(display=False) as counter:
            theirs(x, t, t, y=torch.zeros(1, dtype=torch.long))
    print(f"facm-xl1: {model_info('facm-xl1').gflops:.2f} GFLOPs here, {counter.get_total_flops() / 1e9:.2f} counted")
    assert model_info("facm-xl1").gflops * 1e9 == pytest.approx(counter.get_total_flops(), rel=0.01)


@pytest.mark.parametrize("head_dim,grid", [(72, 16), (16, 16), (16, 5)])
def test_rope_tables_are_evas(ref, head_dim, grid):
    """The derived tables against VisionRotaryEmbeddingFast's buffers (each angle repeated over its pair)
    at XL/1's 72-wide heads on 16x16 tokens and at other sizes."""
    theirs = ref.ldit.VisionRotaryEmbeddingFast(dim=head_dim // 2, pt_seq_len=grid)
    cos, sin = eva_rope_tables(head_dim, grid)
    assert cos.shape == (grid * grid, head_dim // 2)
    assert torch.allclose(cos.repeat_interleave(2, -1), theirs.freqs_cos, atol=1e-6)
    assert torch.allclose(sin.repeat_interleave(2, -1), theirs.freqs_sin, atol=1e-6)


def test_rope_rotates_as_evas(ref):
    """apply_pair_rope with the derived tables is EVA's rotation of a (N, H, T, d) head tensor."""
    theirs = ref.ldit.VisionRotaryEmbeddingFast(dim=36, pt_seq_len=16)
    q = torch.randn(2, 3, 256, 72, generator=torch.Generator().manual_seed(0))  # (N, H, T, d)
    ours = network.apply_pair_rope(q.transpose(1, 2), *eva_rope_tables(72, 16)).transpose(1, 2)
    assert rel_dev(ours, theirs(q)) <= 1e-6
    assert rel_dev(ours, q) > 0.1  # the rotation is not the identity


def test_file_rope_tables_are_checked_and_dropped():
    cos, sin = (t.repeat_interleave(2, -1) for t in eva_rope_tables(16, 4))
    sd = {"pos_embed": torch.zeros(1), ROPE_KEYS[0]: cos, ROPE_KEYS[1]: sin}
    assert set(check_rope_tables(sd, 16, 4, "f.pt")) == {"pos_embed"}
    assert set(check_rope_tables({"pos_embed": torch.zeros(1)}, 16, 4, "f.pt")) == {"pos_embed"}
    with pytest.raises(InputError, match=r"f.pt: feat_rope.freqs_cos \(16, 16\) is not the rope of a 5x5 token grid"):
        check_rope_tables(sd, 16, 5, "f.pt")
    shifted = dict(sd, **{ROPE_KEYS[1]: sin.roll(1, dims=0)})
    with pytest.raises(InputError, match=r"freqs_sin .* head width 16"):
        check_rope_tables(shifted, 16, 4, "f.pt")


def test_forward_matches_the_official_module(reference_dit):
    """F(x, t, y) at times off the sampler's grid, conditional and null-class."""
    theirs = reference_dit()
    ours = loaded(theirs, **TINY)
    x = torch.randn(3, 32, 16, 16, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([0.0, 0.37, 0.9]), torch.tensor([3, 1000, 9])  # 1000: the null row
    with torch.no_grad():
        expected = theirs(x, t, torch.ones(3), y=y)
        assert rel_dev(ours(x, t, y), expected) <= TOL
        assert rel_dev(ours(x, t.flip(0), y), expected) > 0.05  # t matters
        assert torch.equal(ours(x, t, None), ours(x, t, torch.full((3,), 1000)))  # None is the null row


def test_forward_at_xl_width_matches(reference_dit):
    """XL/1's 1152 width, 16 heads of 72 (18 rope pairs per axis) and SwiGLU 3072, at depth 2."""
    theirs = reference_dit(seed=2, shrink=dict(depth=2))
    ours = loaded(theirs, depth=2)
    x = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(3))
    t, y = torch.tensor([0.0, 0.5]), torch.tensor([207, 1000])
    with torch.no_grad():
        dev = rel_dev(ours(x, t, y), theirs(x, t, torch.ones(2), y=y))
    print(f"facm XL width, depth 2: relative deviation {dev:.2e}")
    assert dev <= TOL


@pytest.mark.parametrize("overrides,message", [
    (dict(num_heads=3), r"hidden_size 64 is not divisible by num_heads 3"),
    (dict(hidden_size=40), r"head width hidden_size / num_heads = 10 must be divisible by 4"),
    (dict(hidden_size=72, num_heads=4), r"head width hidden_size / num_heads = 18 must be divisible by 4"),
    (dict(patch_size=3), r"input_size 16 is not a multiple of patch_size 3"),
])
def test_bad_sizes_are_input_errors(overrides, message):
    with pytest.raises(InputError, match=message):
        model_info("facm-xl1", **{**TINY, **overrides})


def test_docstring_examples_run():
    assert doctest.testmod(network).failed == 0
