"""Building blocks in adapters/layers.py against brute-force references and torch's own modules."""

import doctest
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from adapters import layers
from adapters.layers import (Attention, LabelEmbedder, Mlp, RMSNorm, SwiGLU, TimestepEmbedder, TransformerBlock,
                             apply_rope, modulate, patchify, rope_2d_tables, timestep_embedding, unpatchify,
                             zero_adaln)


def test_patchify_roundtrip_and_layout():
    x = torch.randn(2, 4, 8, 8)
    tokens = patchify(x, 2)  # (2, 16, 16)
    assert tokens.shape == (2, 16, 16)
    # Token 1 is the patch at rows 0-1, columns 2-3; features channel-major (c, i, j).
    assert torch.equal(tokens[:, 1].view(2, 4, 2, 2), x[:, :, 0:2, 2:4])
    assert torch.equal(unpatchify(tokens, 2, (8, 8)), x)


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 0.5, 3.0])
    emb = timestep_embedding(t, 8, max_period=10000.0)  # freqs 10000^(-k/4), k = 0..3
    freqs = torch.tensor([10000.0 ** (-k / 4) for k in range(4)])
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(emb, expected)
    odd = timestep_embedding(t, 9)
    assert odd.shape == (3, 9) and torch.all(odd[:, -1] == 0)


def test_timestep_embedder_scales_its_input():
    emb = TimestepEmbedder(16, frequency_embedding_size=8, scale=1000.0)
    plain = TimestepEmbedder(16, frequency_embedding_size=8)
    plain.load_state_dict(emb.state_dict())
    t = torch.tensor([0.25, 0.75])
    torch.testing.assert_close(emb(t), plain(t * 1000))


def test_label_embedder_null_class_is_the_last_row():
    emb = LabelEmbedder(10, 6)
    assert emb.embedding_table.weight.shape == (11, 6)
    torch.testing.assert_close(emb(None, 3), emb.embedding_table.weight[10].expand(3, 6))
    torch.testing.assert_close(emb(torch.tensor([2, 7]), 2), emb.embedding_table.weight[[2, 7]])


def test_rmsnorm_matches_torch():
    x = torch.randn(3, 5, 16) * 4
    ours = RMSNorm(16, eps=1e-6)
    ours.weight.data = torch.randn(16)
    ref = torch.nn.RMSNorm(16, eps=1e-6)
    ref.weight.data = ours.weight.data.clone()
    torch.testing.assert_close(ours(x), ref(x))
    assert RMSNorm(16, elementwise_affine=False).weight is None


def _rope_reference(x, rows, cols, base=10000.0):
    """Complex-number RoPE: per axis, channel pair (j, j + d/4) is one complex number turned by pos * f_j."""
    n, h, t, d = x.shape
    q = d // 4
    freqs = base ** (-torch.arange(q, dtype=torch.float64) / q)
    out = torch.empty_like(x, dtype=torch.float64)
    for axis, pos in ((0, rows), (1, cols)):
        seg = x[..., axis * 2 * q:(axis + 1) * 2 * q].double()
        z = torch.complex(seg[..., :q], seg[..., q:])  # (N, H, T, d/4)
        z = z * torch.polar(torch.ones(t, q, dtype=torch.float64), pos.double()[:, None] * freqs)
        out[..., axis * 2 * q:(axis + 1) * 2 * q] = torch.cat([z.real, z.imag], dim=-1)
    return out.to(x.dtype)


def test_rope_matches_complex_rotation_and_is_relative():
    grid, d = 4, 8
    cos, sin = rope_2d_tables(grid, d)
    x = torch.randn(2, 3, grid * grid, d)
    rows = torch.arange(grid).repeat_interleave(grid)
    cols = torch.arange(grid).repeat(grid)
    torch.testing.assert_close(apply_rope(x, cos, sin), _rope_reference(x, rows, cols), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))

    # q.k after rotation depends on positions only through their difference:
    # tokens (0,0)->(1,2) and (2,1)->(3,3) are the same offset (1, 2).
    q, k = torch.randn(d), torch.randn(d)

    def score(pq, pk):
        both = torch.stack([q, k]).view(1, 1, 2, d)
        tok = torch.tensor([pq[0] * grid + pq[1], pk[0] * grid + pk[1]])
        rq, rk = apply_rope(both, cos[tok], sin[tok])[0, 0]
        return rq @ rk

    torch.testing.assert_close(score((0, 0), (1, 2)), score((2, 1), (3, 3)))
    assert not torch.isclose(score((0, 0), (1, 2)), score((0, 0), (2, 1)))
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_2d_tables(4, 6)


@pytest.mark.parametrize("qk_norm,use_rope", [(False, False), (True, True)])
def test_attention_matches_explicit_softmax(qk_norm, use_rope):
    torch.manual_seed(0)
    n, t, dim, heads = 2, 16, 32, 4
    attn = Attention(dim, heads, qkv_bias=True, qk_norm=qk_norm)
    if qk_norm:
        attn.q_norm.weight.data = torch.rand(8) + 0.5
        attn.k_norm.weight.data = torch.rand(8) + 0.5
    x = torch.randn(n, t, dim)
    rope = rope_2d_tables(4, dim // heads) if use_rope else None

    # Brute force: per head, softmax(q k^T / sqrt(d)) v, with the norms and rotations applied by hand.
    q, k, v = attn.qkv(x).split(dim, dim=-1)
    outs = []
    for h in range(heads):
        sl = slice(h * 8, (h + 1) * 8)
        qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]  # (N, T, 8)
        if qk_norm:
            qh = qh / qh.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * attn.q_norm.weight
            kh = kh / kh.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * attn.k_norm.weight
        if rope is not None:
            rows, cols = torch.arange(4).repeat_interleave(4), torch.arange(4).repeat(4)
            qh = _rope_reference(qh[:, None], rows, cols)[:, 0]
            kh = _rope_reference(kh[:, None], rows, cols)[:, 0]
        w = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(8), dim=-1)
        outs.append(w @ vh)
    expected = attn.proj(torch.cat(outs, dim=-1))
    torch.testing.assert_close(attn(x, rope), expected, atol=1e-5, rtol=1e-5)


def test_mlps_match_their_formulas():
    x = torch.randn(2, 5, 8)
    mlp = Mlp(8, 16)
    torch.testing.assert_close(mlp(x), mlp.fc2(F.gelu(mlp.fc1(x), approximate="tanh")))
    glu = SwiGLU(8, 16)
    h = x @ glu.fc1.weight.T + glu.fc1.bias
    expected = (F.silu(h[..., :16]) * h[..., 16:]) @ glu.fc2.weight.T + glu.fc2.bias
    torch.testing.assert_close(glu(x), expected)


@pytest.mark.parametrize("modern", [False, True])
def test_adaln_zero_block_starts_as_identity_and_modulates_when_trained(modern):
    torch.manual_seed(0)
    blk = TransformerBlock(16, 2, 32, adaln=True, modern=modern)
    zero_adaln(blk)
    x, c = torch.randn(2, 4, 16), torch.randn(2, 16)
    torch.testing.assert_close(blk(x, c), x)
    torch.nn.init.normal_(blk.adaLN_modulation[-1].weight, std=0.1)
    # With modulation, the block is: x + gate1 * attn(modulate(norm x)), then the MLP likewise.
    s1, sc1, g1, s2, sc2, g2 = blk.adaLN_modulation(c).chunk(6, dim=-1)
    h = x + g1[:, None] * blk.attn(modulate(blk.norm1(x), s1, sc1))
    expected = h + g2[:, None] * blk.mlp(modulate(blk.norm2(h), s2, sc2))
    torch.testing.assert_close(blk(x, c), expected)


@pytest.mark.parametrize("adaln,modern", [(True, False), (True, True), (False, True)])
def test_block_flops_match_flop_counter(adaln, modern):
    with torch.device("meta"):
        blk = TransformerBlock(64, 4, 192, adaln=adaln, modern=modern)
        x, c = torch.empty(3, 16, 64), torch.empty(3, 64)
        rope = rope_2d_tables(4, 16) if modern else None
    with FlopCounterMode(display=False) as counter:
        blk(x, c, rope)
    assert counter.get_total_flops() == 3 * blk.flops(16)


def test_timestep_embedder_flops_match_flop_counter():
    emb = TimestepEmbedder(48, frequency_embedding_size=32)
    with FlopCounterMode(display=False) as counter:
        emb(torch.rand(5))
    assert counter.get_total_flops() == 5 * emb.flops()


def test_docstring_examples_run():
    assert doctest.testmod(layers).failed == 0
