"""TARFlow's sampler (adapters/tarflow/sampler.py): decoding paths, guidance, denoising,
checkpoints, option checks and bookkeeping, on tiny configurations (fixtures in conftest.py).

The references are independent of the code under test where it matters: Jacobi and
GS-Jacobi decoding are compared with cached sequential decoding (itself checked against a
brute-force solve in test_network.py), the denoising step with a brute-force log-density
(full Jacobian, slogdet) and finite differences.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from adapters import load_sampler, model_info
from adapters.api.errors import InputError

GUIDED = dict(guidance=1.5, annealed_guidance=True, attn_temp=0.8, denoise=False)


@pytest.fixture
def easy(tiny):
    """`easy(seed=0)`: a tiny TARFlow whose blocks are weakly coupled (proj_out shrunk 10x),
    so Jacobi passes contract fast; the flow still moves samples by about 1."""
    def make(seed=0):
        s = tiny(seed=seed)
        with torch.no_grad():
            for block in s.net.blocks:
                block.proj_out.weight.mul_(0.1)
        return s

    return make


def test_sequential_records_t_minus_one_steps_per_block(tiny, noise_and_labels):
    s = tiny()
    z, y = noise_and_labels(s)
    s.generate(z, y, **GUIDED)
    assert s.last_stats == {"iterations_per_block": [15, 15], "iterations_mean": 15.0, "iterations_max": 15,
                            "iterations_total": 30}
    json.dumps(s.last_stats)  # the bench copies it into rows


@pytest.mark.parametrize("options, per_segment", [
    (dict(decoding="jacobi"), [[15], [15]]),
    (dict(decoding="jacobi", jacobi_init="zeros"), [[15], [15]]),
    (dict(decoding="gs-jacobi", gs_segments=1), [[15], [15]]),
    (dict(decoding="gs-jacobi", gs_segments=4), [[4, 4, 4, 3]] * 2),  # the authors' split of T = 16
    (dict(decoding="gs-jacobi", gs_segments=6, jacobi_init="zeros"), [[3, 3, 3, 2, 2, 2]] * 2),  # uneven
    (dict(decoding="gs-jacobi", gs_segments=15), [[1] * 15] * 2),  # one token per segment: sequential
    (dict(decoding="gs-jacobi", gs_segments=(2, 7), jacobi_init=("zeros", "noise")),
     [[8, 7], [3, 2, 2, 2, 2, 2, 2]]),
], ids=["jacobi", "jacobi-zeros", "gs-1", "gs-4", "gs-6-zeros", "gs-15", "gs-per-block"])


@pytest.mark.parametrize("guided", [False, True])
def test_parallel_decoding_at_tolerance_zero_is_sequential_float64(options, per_segment, guided, tiny, noise_and_labels):
    """At tolerance 0 every segment runs to its cap, its length, after which it is exact:
    the result is the sequential one to float64 rounding (1e-10)."""
    s = tiny()
    z, y = noise_and_labels(s)
    kwargs = GUIDED if guided else dict(denoise=False)
    seq = s.generate(z, y, **kwargs)
    x = s.generate(z, y, **kwargs, **options, jacobi_tol=0.0)
    assert (seq - z).abs().max() > 0.1  # the flow is far from the identity
    torch.testing.assert_close(x, seq, rtol=0, atol=1e-10)
    stats = s.last_stats
    assert stats["iterations_per_block"] == [15, 15] and stats["iterations_max"] == 15
    assert stats["iterations_mean"] == 15.0 and stats["iterations_total"] == 30
    if options["decoding"] == "gs-jacobi":
        assert stats["iterations_per_segment"] == per_segment
    else:
        assert "iterations_per_segment" not in stats


@pytest.mark.parametrize("guided", [False, True])
def test_gs_jacobi_stops_early_on_easy_blocks_within_the_tolerance(guided, noise_and_labels, easy):
    s = easy()
    z, y = noise_and_labels(s)
    kwargs = GUIDED if guided else dict(denoise=False)
    seq = s.generate(z, y, **kwargs)
    tol = 1e-3
    x = s.generate(z, y, **kwargs, decoding="gs-jacobi", gs_segments=2, jacobi_tol=tol)
    stats = s.last_stats
    assert stats["iterations_max"] <= 8, stats  # of the 15 passes that are exact by construction
    assert [sum(p) for p in stats["iterations_per_segment"]] == stats["iterations_per_block"]
    assert stats["iterations_mean"] == sum(stats["iterations_per_block"]) / 2
    # The last pass of every segment moved no entry by more than tol; with a contracting
    # iteration the distance left to the fixed point is below that, so after two blocks
    # the samples lie within tol of sequential decoding, though not on it.
    err = float((x - seq).abs().max())
    assert 1e-8 < err < tol, err
    # Jacobi (one segment) on the same blocks also stops early and lands as close.
    xj = s.generate(z, y, **kwargs, decoding="jacobi", jacobi_tol=tol)
    assert s.last_stats["iterations_max"] <= 5 and float((xj - seq).abs().max()) < tol


def test_parallel_decoding_results_do_not_depend_on_the_batch(noise_and_labels, easy):
    """A sample that has converged is frozen while the others go on, so it gets what it
    would get alone, although the batch runs as many passes as its slowest sample."""
    s = easy()
    z, y = noise_and_labels(s, n=4)
    for options in (dict(decoding="jacobi"), dict(decoding="gs-jacobi", gs_segments=(2, 3))):
        batch = s.generate(z, y, **GUIDED, **options, jacobi_tol=1e-3)
        batch_passes = s.last_stats["iterations_total"]
        alone, passes = [], []
        for i in range(4):
            alone.append(s.generate(z[i:i + 1], y[i:i + 1], **GUIDED, **options, jacobi_tol=1e-3))
            passes.append(s.last_stats["iterations_total"])
        assert batch_passes == max(passes) and min(passes) < max(passes)  # samples do converge at different passes
        torch.testing.assert_close(batch, torch.cat(alone), rtol=0, atol=1e-12)


def test_jacobi_converges_to_sequential_and_the_cap_binds(tiny, noise_and_labels):
    s = tiny()
    z, y = noise_and_labels(s)
    # A weakly coupled flow (smaller weights) converges in a few sweeps: the tolerance stops it.
    weak = tiny(scale=0.02)
    seq = weak.generate(z, y, **GUIDED)
    loose = weak.generate(z, y, **GUIDED, decoding="jacobi", jacobi_tol=1e-6)
    assert weak.last_stats["iterations_max"] < 15 - 3, weak.last_stats  # stopped early ...
    assert (loose - seq).abs().max() < 1e-5  # ... close to the fixed point
    seq = s.generate(z, y, denoise=False)
    capped = s.generate(z, y, denoise=False, decoding="jacobi", jacobi_tol=0.0, jacobi_max_iters=2)
    assert s.last_stats["iterations_per_block"] == [2, 2]
    assert (capped - seq).abs().max() > 1e-3  # two sweeps are not enough
    capped = s.generate(z, y, denoise=False, decoding="gs-jacobi", gs_segments=3, jacobi_tol=0.0,
                        jacobi_max_iters=(2, 7))
    assert s.last_stats["iterations_per_segment"] == [[2, 2, 2], [5, 5, 5]]  # a cap above a segment's length is it
    assert (capped - seq).abs().max() > 1e-3


def test_guidance_zero_is_the_unguided_path_and_guidance_matters(tiny, noise_and_labels, tiny_config):
    s = tiny()
    z, y = noise_and_labels(s)
    plain = s.generate(z, y, denoise=False)  # config guidance 0.0
    assert torch.equal(s.generate(z, y, guidance=0.0, attn_temp=0.5, annealed_guidance=True, denoise=False), plain)
    guided = s.generate(z, y, guidance=1.0, denoise=False)
    assert (guided - plain).abs().max() > 1e-3
    default_guided = load_sampler("tarflow", dtype=torch.float64, **{**tiny_config, "guidance": 1.0})
    default_guided.net.load_state_dict(s.net.state_dict())
    assert torch.equal(default_guided.generate(z, y, denoise=False), guided)


def test_denoise_step_is_sigma_squared_times_the_score(tiny, noise_and_labels):
    # One channel, 4x4, patch 2: 16 numbers, so the log-density can be brute-forced with
    # the full Jacobian of the data-to-noise map.
    s = tiny(img_size=4, in_channels=1, patch_size=2, channels=64, num_classes=3, noise_std=0.3, scale=0.1)
    z, y = noise_and_labels(s, n=1)
    x = s.generate(z, y, guidance=1.0, denoise=False)
    step = s.generate(z, y, guidance=1.0, denoise=True) - x

    def log_p(v):  # -1/2 |f(v)|^2 + log|det df/dv|, f from the module's forward only
        f = lambda u: s.net(u.view(1, 1, 4, 4), y)[0].reshape(-1)  # noqa: E731
        jac = torch.autograd.functional.jacobian(f, v)
        return -0.5 * f(v).pow(2).sum() + torch.linalg.slogdet(jac)[1]

    v0, eps = x.reshape(-1), 1e-5
    score = torch.stack([(log_p(v0 + eps * e) - log_p(v0 - eps * e)) / (2 * eps) for e in torch.eye(16, dtype=v0.dtype)])
    assert score.abs().max() > 1  # a non-trivial score
    torch.testing.assert_close(step.reshape(-1), 0.3**2 * score, rtol=1e-5, atol=1e-8)


def test_checkpoint_round_trip_and_fingerprint(tmp_path, tiny, noise_and_labels, tiny_config):
    s = tiny(dtype=torch.float32)
    path = tmp_path / "model.pth"
    torch.save(s.net.state_dict(), path)
    loaded = load_sampler("tarflow", checkpoint=str(path), **tiny_config)
    assert loaded.info.weights == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert s.info.weights == "random-init"
    z, y = noise_and_labels(s)
    z = z.float()
    assert torch.equal(loaded.generate(z, y, guidance=1.5, annealed_guidance=True, denoise=False),
                       s.generate(z, y, guidance=1.5, annealed_guidance=True, denoise=False))
    # the exact call external checks make
    ext = load_sampler("tarflow", checkpoint=str(path), img_size=8, in_channels=3, patch_size=2, channels=64,
                       num_blocks=2, layers_per_block=2, num_classes=10, noise_std=0.05)
    out = ext.generate(z, y, guidance=1.5, annealed_guidance=True, denoise=False)
    assert out.shape == z.shape and out.dtype == torch.float32


def test_checkpoint_mismatches_are_named(tmp_path, tiny, tiny_config):
    sd = tiny(dtype=torch.float32).net.state_dict()
    sd.pop("blocks.1.pos_embed")
    sd["blocks.0.extra"] = torch.zeros(1)
    sd["blocks.0.proj_in.weight"] = torch.zeros(64, 13)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(InputError) as err:
        load_sampler("tarflow", checkpoint=str(path), **tiny_config)
    msg = str(err.value)
    assert "missing tensors: blocks.1.pos_embed" in msg
    assert "unexpected tensors: blocks.0.extra" in msg
    assert "blocks.0.proj_in.weight (file (64, 13), model (64, 12))" in msg


def test_output_is_deterministic_and_batch_independent(tiny, noise_and_labels):
    s = tiny(dtype=torch.float32)
    z, y = noise_and_labels(s)
    z = z.float()
    first = s.generate(z, y, guidance=1.0, denoise=True)
    assert torch.equal(first, s.generate(z, y, guidance=1.0, denoise=True))
    alone = s.generate(z[1:2], y[1:2], guidance=1.0, denoise=True)
    torch.testing.assert_close(alone, first[1:2], rtol=1e-5, atol=1e-5)  # float32 matmul blocking may differ


@pytest.mark.parametrize("noise_shape, labels, message", [
    ((2, 3, 8, 4), None, "noise has shape"),
    ((2, 4, 8, 8), None, "noise has shape"),
    ((2, 3, 8, 8), torch.tensor([0, 10]), r"\[0, 10\)"),
])


def test_bad_inputs_raise_input_error(noise_shape, labels, message, tiny_config):
    s = load_sampler("tarflow", **tiny_config)
    with pytest.raises(InputError, match=message):
        s.generate(torch.zeros(noise_shape), labels)


@pytest.mark.parametrize("options, message", [
    (dict(guidance=-1.0), "guidance must be >= 0"),
    (dict(decoding="parallel"), "decoding must be one of sequential, jacobi, gs-jacobi, got 'parallel'"),
    (dict(attn_temp=0.0), "attn_temp must be positive"),
    (dict(guide_what="c"), "guide_what"),
    (dict(decoding="jacobi", jacobi_max_iters=0), r"jacobi_max_iters must be an integer >= 1 or None .* got 0"),
    (dict(decoding="jacobi", jacobi_tol=-1e-3), "jacobi_tol must be a number >= 0, got -0.001"),
    (dict(decoding="jacobi", jacobi_tol=float("nan")), "jacobi_tol must be a number >= 0, got nan"),
    (dict(decoding="jacobi", jacobi_init="ones"), "jacobi_init must be one of noise, zeros .* got 'ones'"),
    (dict(decoding="gs-jacobi", gs_segments=0), r"gs_segments must be an integer in \[1, 15\] .* got 0"),
    (dict(decoding="gs-jacobi", gs_segments=16), r"gs_segments must be an integer in \[1, 15\] .* got 16"),
    (dict(decoding="gs-jacobi", gs_segments=2.0), r"gs_segments must be an integer in \[1, 15\] .* got 2.0"),
    (dict(decoding="gs-jacobi", gs_segments=(1, 2, 3)), "gs_segments has 3 entries, but the model has 2 blocks"),
    (dict(decoding="jacobi", gs_segments=2), "gs_segments applies to decoding='gs-jacobi' only, not 'jacobi'"),
    (dict(temperature=1.0), "unknown option"),
])


def test_bad_options_raise_input_error(options, message, tiny_config):
    s = load_sampler("tarflow", **tiny_config)
    with pytest.raises(InputError, match=message):
        s.generate(torch.zeros(1, 3, 8, 8), None, **options)


@pytest.mark.parametrize("overrides, message", [
    (dict(img_size=9), "multiple of patch_size"),
    (dict(channels=100), "multiple of head_dim"),
    (dict(space="voxel"), "space must be"),
    (dict(num_blocks=0), "positive integers"),
])


def test_bad_configs_raise_input_error(overrides, message, tiny_config):
    with pytest.raises(InputError, match=message):
        model_info("tarflow", **{**tiny_config, **overrides})


def test_compiled_sampler_gives_the_same_samples():
    """`compile` wraps the token step the sequential loop calls (checked with dynamo's eager
    backend, which traces the same graphs without code generation)."""
    kwargs = dict(img_size=8, in_channels=3, patch_size=2, channels=64, num_blocks=2, layers_per_block=1,
                  num_classes=4, noise_std=0.05)
    plain = load_sampler("tarflow", **kwargs)
    torch.manual_seed(0)
    for p in plain.net.parameters():
        p.data.normal_(0, 0.05)
    compiled = load_sampler("tarflow", **kwargs)
    compiled.net.load_state_dict(plain.net.state_dict())
    assert compiled.compile(backend="eager") == "layer.step+block.window+net"
    z, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 3])
    for options in (dict(), dict(decoding="jacobi"), dict(decoding="gs-jacobi", gs_segments=3, jacobi_tol=0.0)):
        expected = plain.generate(z, y, guidance=1.0, denoise=False, **options)
        assert torch.allclose(compiled.generate(z, y, guidance=1.0, denoise=False, **options), expected, atol=1e-6)
        assert compiled.last_stats == plain.last_stats
