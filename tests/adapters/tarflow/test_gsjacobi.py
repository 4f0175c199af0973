"""GS-Jacobi schedules, the CRM/IGM block metrics and the plan they give.

The metrics are checked against a hand computation in numpy on a 2-block toy whose
transformer layers add nothing to the residual stream (attention and MLP outputs zeroed),
so each block's affine parameters are a linear function of the previous token alone. The
plan is checked against the paper's four published CRM tables and the strategies the
authors ran on them (README of github:encoreus/GS-Jacobi_for_TarFlow).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapters import load_sampler
from adapters.api.errors import InputError
from adapters.tarflow.gsjacobi import (
    BlockMetrics,
    gs_jacobi_metrics,
    gs_jacobi_plan,
    resolve_schedules,
    segment_bounds,
)

TOY = dict(img_size=4, in_channels=1, patch_size=2, channels=32, head_dim=32, num_blocks=2, layers_per_block=1,
           num_classes=3, noise_std=0.05)  # T = 4 tokens of width D = 4


@pytest.mark.parametrize("t, k", [(16, 1), (16, 4), (16, 6), (16, 15), (256, 8), (10, 3)])
def test_segments_cover_the_unknown_tokens_in_near_equal_runs(t, k):
    bounds = segment_bounds(t, k)
    assert len(bounds) == k and bounds[0][0] == 1 and bounds[-1][1] == t
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, in order
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    if t % k == 0:  # the authors' split: k - 1 modules of T/k tokens, the last one short by token 0
        assert sizes == [t // k] * (k - 1) + [t // k - 1]


def test_schedules_broadcast_and_cap_per_segment():
    (b0, b1) = resolve_schedules("m", 2, 16, decoding="gs-jacobi", jacobi_tol=1e-3, jacobi_max_iters=(3, None),
                                 jacobi_init="zeros", gs_segments=(4, 2))
    assert b0.segments == ((1, 5), (5, 9), (9, 13), (13, 16)) and b0.max_iters == (3, 3, 3, 3)
    assert b1.segments == ((1, 9), (9, 16)) and b1.max_iters == (8, 7)  # None: each segment's length
    assert b0.init == b1.init == "zeros"
    (j,) = resolve_schedules("m", 1, 16, decoding="jacobi", jacobi_tol=0.0, jacobi_max_iters=40)
    assert j.segments == ((1, 16),) and j.max_iters == (15,) and j.init == "noise"
    assert resolve_schedules("m", 2, 16, decoding="sequential", jacobi_tol=0.0) is None


def _toy(seed=0):
    """The toy TARFlow in float64: attention.proj and mlp.main.2 zeroed, the rest random."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        s = load_sampler("tarflow", dtype=torch.float64, **TOY)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in s.net.named_parameters():
            if ".attention.proj." in name or ".mlp.main.2." in name:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1)
    return s


def _hand_metrics(s, x, y):
    """CRM/IGM per block from the toy's weights in numpy: with the layers silent,
    out_i = W_out (W_in x_i + b_in + pos_i + cls) + b_out parameterises token i + 1."""
    sd = {k: v.numpy() for k, v in s.net.state_dict().items()}
    n, d = x.shape[0], 4
    tokens = x.numpy().reshape(n, 1, 2, 2, 2, 2).transpose(0, 2, 4, 1, 3, 5).reshape(n, 4, d)  # unfold order
    out = []
    for i in range(2):
        p = f"blocks.{i}."
        flip = i % 2 == 1
        pos = sd[p + "pos_embed"][::-1] if flip else sd[p + "pos_embed"]
        cls = sd[p + "class_embed"][y.numpy(), 0][:, None, :]  # (N, 1, C)
        w_out, b_out = sd[p + "proj_out.weight"], sd[p + "proj_out.bias"]

        def affine(v):
            h = v @ sd[p + "proj_in.weight"].T + sd[p + "proj_in.bias"] + pos + cls  # (N, T, C)
            o = h @ w_out.T + b_out
            o = np.concatenate([np.zeros_like(o[:, :1]), o[:, :-1]], axis=1)
            return o[..., :d], o[..., d:]

        xp = tokens[:, ::-1] if flip else tokens
        a, b = affine(xp)
        zp = (xp - b) * np.exp(-a)
        data = np.linalg.norm((np.exp(-a) * xp).mean(axis=0), 2)
        crm = data * np.linalg.norm(w_out[:d], 2) + np.linalg.norm(w_out[d:], 2)
        igm = {}
        for init, guess in (("noise", zp), ("zeros", np.concatenate([zp[:, :1], np.zeros_like(zp[:, 1:])], 1))):
            a0, b0 = affine(guess)
            igm[init] = np.linalg.norm((zp * np.exp(a0) + b0 - xp).mean(axis=0), 2)
        out.append((crm, data, igm))
        tokens = zp[:, ::-1] if flip else zp
    return out


def test_metrics_match_a_hand_computation_on_a_two_block_toy():
    s = _toy()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 1, 4, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=gen)
    got = gs_jacobi_metrics(s.net, x, y)
    want = _hand_metrics(s, x, y)
    assert [m.block for m in got] == [0, 1]
    for m, (crm, data, igm) in zip(got, want):
        assert m.crm == pytest.approx(crm, rel=1e-10) and m.data_term == pytest.approx(data, rel=1e-10)
        assert m.igm == pytest.approx(igm, rel=1e-10)
        assert m.crm == pytest.approx(m.data_term * m.scale_weights + m.shift_weights, rel=1e-12)
    assert got[0].igm["noise"] != pytest.approx(got[0].igm["zeros"], rel=1e-3)  # the two guesses differ


def test_metrics_are_deterministic_and_shaped_per_block():
    s = _toy()
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    first = gs_jacobi_metrics(s.net, x)  # labels None: the mean class embedding
    assert first == gs_jacobi_metrics(s.net, x)
    assert len(first) == 2 and all(isinstance(m, BlockMetrics) and set(m.igm) == {"noise", "zeros"} for m in first)
    assert all(np.isfinite([m.crm, m.data_term, *m.igm.values()]).all() and m.crm > 0 for m in first)
    fro = gs_jacobi_metrics(s.net, x, ord="fro")
    assert all(f.crm >= m.crm for f, m in zip(fro, first))  # Frobenius >= spectral, term by term
    with pytest.raises(InputError, match="ord must be one of 2, 1, fro, got 3"):
        gs_jacobi_metrics(s.net, x, ord=3)


# CRM per block (block 0 first) from the authors' README, and the blocks their strategies
# segment (num_GS != 1; their lists run in decoding order, from block 7 down to block 0).
PAPER = {
    "img128cond": ([5.22, 5.63, 2.47, 10.93, 7.74, 7.35, 56.57, 4.05], [1, 8, 1, 1, 1, 1, 1, 1]),
    "afhq": ([6.33, 6.28, 8.16, 7.94, 9.01, 10.27, 9.36, 42.60], [8, 1, 1, 1, 1, 1, 1, 1]),
    "img64uncond": ([50.71, 2.42, 2.29, 3.38, 1.77, 1.33, 33.62, 4.44], [1, 8, 1, 1, 1, 1, 1, 8]),
    "img64cond": ([74.58, 4.88, 0.72, 0.96, 4.05, 2.68, 1.62, 10.46], [8, 1, 1, 1, 1, 1, 1, 0]),
}


@pytest.mark.parametrize("model", sorted(PAPER))
def test_plan_segments_the_blocks_the_paper_segments(model):
    crm, num_gs_decoding_order = PAPER[model]
    segmented = tuple(sorted(7 - i for i, k in enumerate(num_gs_decoding_order) if k != 1))
    metrics = [BlockMetrics(i, c, 0.0, 0.0, 0.0, {"noise": 1.0 + (i == 3), "zeros": 1.5}) for i, c in enumerate(crm)]
    plan = gs_jacobi_plan(metrics, num_tokens=256, tough_max_iters=32, simple_max_iters=10)
    assert plan.tough == segmented
    assert plan.segments == tuple(8 if i in segmented else 1 for i in range(8))
    assert plan.max_iters == tuple(32 if i in segmented else 10 for i in range(8))
    assert plan.init == tuple("zeros" if i == 3 else "noise" for i in range(8))  # the lower IGM


def test_plan_from_a_batch_drives_the_sampler():
    s = _toy()
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    metrics = gs_jacobi_metrics(s.net, x)
    plan = gs_jacobi_plan(metrics, num_tokens=4, tough_factor=0.0, tough_segments=8)  # every block tough
    assert plan.segments == (3, 3)  # at most T - 1
    z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    seq = s.generate(z, None, denoise=False)
    x = s.generate(z, None, denoise=False, jacobi_tol=0.0, **plan.options())
    torch.testing.assert_close(x, seq, rtol=0, atol=1e-10)
    assert s.last_stats["iterations_per_segment"] == [[1, 1, 1], [1, 1, 1]]
    with pytest.raises(InputError, match="tough_segments must be an integer >= 1, got 0"):
        gs_jacobi_plan(metrics, 4, tough_segments=0)
