"""Flax TARFlow port: parity with the torch adapter on the same weights and noise, the token
loop compiled once, option checks and conversion errors.

The reference is `adapters.tarflow.sampler.TARFlowSampler` (itself tested against a brute-force
solve in tests/adapters/tarflow/test_network.py), run on tiny configurations whose every parameter
is perturbed with a seeded generator, so proj_out (zero at init), the class embeddings and
the prior variance all do real work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from adapters import load_sampler
from adapters.api.errors import InputError
from adapters.tarflow.config import TARFlowConfig
from adapters.tarflow.jax_network import TARFlow, convert_params
from adapters.tarflow.jax_port import FAMILY_OPTIONS, iteration_stats, make_generate

# T = (8/2)^2 = 16 tokens; two blocks so both token orders are exercised.
TINY = dict(img_size=8, in_channels=3, patch_size=2, channels=64, num_blocks=2, layers_per_block=2,
            num_classes=10, noise_std=0.05)
TOL = 1e-4  # max abs difference, float32, samples of magnitude up to about 5


def perturbed(seed=0, proj_out_scale=0.02, **overrides):
    """A tiny torch TARFlow sampler with every parameter perturbed (and the prior variance
    randomised when `random_var`)."""
    random_var = overrides.pop("random_var", False)
    with torch.random.fork_rng():  # the initialisation draws from the global generator
        torch.manual_seed(seed)
        s = load_sampler("tarflow", **{**TINY, **overrides})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in s.net.named_parameters():
            scale = proj_out_scale if ".proj_out." in name else 0.05
            p.add_(torch.randn(p.shape, generator=gen) * scale)
        if random_var:
            s.net.var.copy_(0.5 + torch.rand(s.net.var.shape, generator=gen))
    return s


def jitted(config):
    return jax.jit(make_generate(config, "tarflow"), static_argnames=("guidance",) + FAMILY_OPTIONS)


def to_jax(sampler, dtype=jnp.float32):
    params = convert_params(sampler.net.state_dict(), sampler.config, "tarflow")
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)


def inputs(sampler, n=3, seed=1, labels=True):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, *sampler.info.sample_shape, generator=gen)
    y = torch.randint(0, sampler.info.num_classes, (n,), generator=gen) if labels else None
    return z, y


def max_diff(sampler, generate, params, z, y, **options) -> float:
    x_torch = sampler.generate(z, y, **options).numpy()
    x_jax = generate(params, jnp.asarray(z.numpy()), None if y is None else jnp.asarray(y.numpy(), jnp.int32),
                     **options)
    assert x_jax.shape == x_torch.shape and x_jax.dtype == jnp.float32
    return float(np.abs(np.asarray(x_jax) - x_torch).max())


@pytest.fixture(scope="module")
def tiny():
    s = perturbed()
    return s, jitted(s.config), to_jax(s)


@pytest.mark.parametrize("labels, options", [
    (True, dict(guidance=0.0, denoise=False)),
    (True, dict(guidance=1.5, attn_temp=0.7, denoise=True)),
    (True, dict(guidance=1.5, attn_temp=0.7, annealed_guidance=True, denoise=False)),
    (True, dict(guidance=1.5, guide_what="a", denoise=False)),
    (False, dict(guidance=1.5, denoise=True)),  # mean class embedding in both halves
    # 4 of 15 iterations: not yet the sequential result, so the iteration itself is compared.
    (True, dict(guidance=1.5, annealed_guidance=True, attn_temp=0.7, decoding="jacobi", jacobi_tol=0.0,
                jacobi_max_iters=4, denoise=False)),
    # 2 passes per segment of 4 or 3 (block 0) and 8 or 7 (block 1): the cached segments
    # are compared mid-iteration too.
    (True, dict(guidance=1.5, annealed_guidance=True, attn_temp=0.7, decoding="gs-jacobi", gs_segments=(4, 2),
                jacobi_tol=0.0, jacobi_max_iters=2, jacobi_init=("zeros", "noise"), denoise=False)),
    (False, dict(guidance=1.5, decoding="gs-jacobi", gs_segments=3, jacobi_tol=1e-3, denoise=True)),
], ids=["plain", "guided-denoised", "annealed", "guide-a", "no-labels", "jacobi-4-iters", "gs-jacobi-2-iters",
        "gs-jacobi-tol"])
def test_matches_torch(tiny, labels, options):
    s, generate, params = tiny
    z, y = inputs(s, labels=labels)
    assert max_diff(s, generate, params, z, y, **options) <= TOL


@pytest.mark.parametrize("options", [dict(decoding="jacobi"), dict(decoding="gs-jacobi", gs_segments=(6, 15)),
                                     dict(decoding="gs-jacobi", gs_segments=4, jacobi_init="zeros")])
def test_parallel_decoding_at_tolerance_zero_is_torch_sequential(tiny, options):
    s, generate, params = tiny
    z, y = inputs(s)
    kwargs = dict(guidance=1.5, annealed_guidance=True, attn_temp=0.7, denoise=False)
    x_seq = s.generate(z, y, **kwargs).numpy()
    x_jax = generate(params, jnp.asarray(z.numpy()), jnp.asarray(y.numpy(), jnp.int32), **kwargs, **options,
                     jacobi_tol=0.0)
    assert float(np.abs(np.asarray(x_jax) - x_seq).max()) <= TOL


def test_pass_counts_match_torch(tiny, tmp_path):
    """`make_generate(with_stats=True)` and `JaxSampler.last_stats` report the passes the
    torch sampler reports, here at a tolerance that stops segments early."""
    s, _, params = tiny
    z, y = inputs(s)
    options = dict(guidance=1.5, annealed_guidance=True, decoding="gs-jacobi", gs_segments=(2, 3), jacobi_tol=1e-2,
                   denoise=False)
    s.generate(z, y, **options)
    want = s.last_stats
    assert want["iterations_max"] < 15  # stopped early, so the counts are the tolerance's, not the caps
    with_stats = jax.jit(make_generate(s.config, "tarflow", with_stats=True),
                         static_argnames=("guidance",) + FAMILY_OPTIONS)
    _, passes = with_stats(params, jnp.asarray(z.numpy()), jnp.asarray(y.numpy(), jnp.int32), **options)
    assert iteration_stats(passes, options) == want
    path = tmp_path / "tiny.pth"
    torch.save(s.net.state_dict(), path)
    js = load_sampler("tarflow", checkpoint=str(path), backend="jax", device="cpu", **TINY)
    js.generate(z, y, **options)
    assert js.last_stats == want
    js.generate(z, y, guidance=1.5, denoise=False)
    assert js.last_stats["iterations_per_block"] == [15, 15]  # sequential: T - 1 steps per block


def test_volume_preserving_unconditional_matches_torch():
    # nvp=False: shift-only flow with a learnt prior variance, here without classes.
    s = perturbed(seed=2, in_channels=4, nvp=False, num_classes=0, random_var=True)
    z, _ = inputs(s, labels=False)
    options = dict(guidance=1.0, attn_temp=1.3, annealed_guidance=True, denoise=True)
    assert max_diff(s, jitted(s.config), to_jax(s), z, None, **options) <= TOL


def test_affine_clip_matches_torch():
    s = perturbed(seed=3, proj_out_scale=0.05, affine_clip=0.1)
    z, y = inputs(s)
    # The clip must bind for this to test it: the same weights unclipped sample differently.
    unclipped = load_sampler("tarflow", **TINY)
    unclipped.net.load_state_dict(s.net.state_dict())
    options = dict(guidance=1.5, denoise=False)
    assert float((s.generate(z, y, **options) - unclipped.generate(z, y, **options)).abs().max()) > 0.05
    assert max_diff(s, jitted(s.config), to_jax(s), z, y, **options) <= TOL


def test_log_prob_matches_torch(tiny):
    """The data-to-noise pass behind the denoising step, on inputs small enough that the
    layer norms' epsilon (torch's 1e-5, not Flax's 1e-6) shows."""
    s, _, params = tiny
    z, y = inputs(s)
    for x in (z, 1e-3 * z):
        want = s.net.log_prob(x, y).numpy()
        got = TARFlow(s.config).apply({"params": params}, jnp.asarray(x.numpy()), jnp.asarray(y.numpy()),
                                      method=TARFlow.log_prob)
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-4)


def test_bfloat16_runs_close_to_float32(tiny):
    s, generate, params = tiny
    z, y = inputs(s)
    z_j, y_j = jnp.asarray(z.numpy()), jnp.asarray(y.numpy(), jnp.int32)
    options = dict(guidance=1.5, annealed_guidance=True, denoise=False)
    x32 = np.asarray(generate(params, z_j, y_j, **options))
    x16 = generate(jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params), z_j.astype(jnp.bfloat16),
                   y_j, **options)
    assert x16.dtype == jnp.bfloat16
    # bf16 keeps 8 bits of mantissa; errors compound over 2 x 15 dependent steps.
    assert float(np.abs(np.asarray(x16, np.float32) - x32).max()) <= 0.05 * float(np.abs(x32).max())


def _count_equations(jaxpr) -> int:
    """Equations of a jaxpr and of every sub-jaxpr (loop bodies, grad closures) inside it."""
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):  # ClosedJaxpr
                    n += _count_equations(sub.jaxpr)
                elif hasattr(sub, "eqns"):
                    n += _count_equations(sub)
    return n


def test_token_loop_is_one_compiled_loop():
    """The graph for 64 tokens is the graph for 16: the token loop is a loop primitive, not
    unrolled Python."""
    counts = []
    for img_size in (8, 16):  # 16 and 64 tokens
        config = TARFlowConfig(**{**TINY, "img_size": img_size})
        params = convert_params(load_sampler("tarflow", **{**TINY, "img_size": img_size}).net.state_dict(),
                                config, "tarflow")
        generate = make_generate(config, "tarflow")
        jaxpr = jax.make_jaxpr(lambda p, z, y: generate(p, z, y, guidance=1.5, denoise=True))(
            params, jnp.zeros((2, 3, img_size, img_size)), jnp.zeros(2, jnp.int32)).jaxpr
        loops = [e for e in jaxpr.eqns if e.primitive.name in ("scan", "while")]
        assert len(loops) == config.num_blocks  # one token loop per flow block
        counts.append(_count_equations(jaxpr))
    assert counts[0] == counts[1]


@pytest.mark.parametrize("options, match", [
    (dict(guidance=-1.0), "guidance must be >= 0"),
    (dict(guidance=float("nan")), "guidance must be a finite number"),
    (dict(guidance=1.0, attn_temp=0.0), "attn_temp must be positive"),
    (dict(guidance=1.0, guide_what="c"), "guide_what"),
    (dict(guidance=1.0, decoding="parallel"), "decoding must be one of sequential, jacobi, gs-jacobi"),
    (dict(guidance=1.0, decoding="jacobi", jacobi_max_iters=0), "jacobi_max_iters"),
    (dict(guidance=1.0, decoding="jacobi", jacobi_tol=-1.0), "jacobi_tol must be a number >= 0, got -1.0"),
    (dict(guidance=1.0, decoding="gs-jacobi", gs_segments=16), r"gs_segments must be an integer in \[1, 15\]"),
    (dict(guidance=1.0, decoding="gs-jacobi", gs_segments=(1, 2, 3)), "gs_segments has 3 entries"),
    (dict(guidance=1.0, decoding="jacobi", jacobi_init="ones"), "jacobi_init must be one of noise, zeros"),
])
def test_bad_options_raise_input_error(options, match):
    config = TARFlowConfig(**TINY)
    with pytest.raises(InputError, match=match):  # raised while tracing, before any compute
        make_generate(config, "tarflow")({}, jnp.zeros((1, 3, 8, 8)), None, **options)


def test_port_options_are_the_torch_samplers():
    assert set(FAMILY_OPTIONS) == set(load_sampler("tarflow", **TINY).family_options)


def test_conversion_names_every_problem():
    s = load_sampler("tarflow", **TINY)
    sd = dict(s.net.state_dict())
    del sd["blocks.0.proj_in.bias"]
    sd["blocks.1.extra.weight"] = torch.zeros(3)
    sd["blocks.1.pos_embed"] = torch.zeros(16, 32)
    with pytest.raises(InputError) as err:
        convert_params(sd, s.config, "tarflow")
    message = str(err.value)
    assert "missing tensors: blocks.0.proj_in.bias" in message
    assert "unexpected tensors: blocks.1.extra.weight" in message
    assert "mis-shaped tensors: blocks.1.pos_embed (file (16, 32), expected (16, 64))" in message


def test_conversion_layout():
    s = load_sampler("tarflow", **TINY)
    params = convert_params(s.net.state_dict(), s.config, "tarflow")
    qkv = params["blocks_1"]["attn_blocks_0"]["attention"]["qkv"]["kernel"]
    np.testing.assert_array_equal(qkv, s.net.blocks[1].attn_blocks[0].attention.qkv.weight.numpy().T)
    assert sorted(params) == ["blocks_0", "blocks_1", "var"]
    assert params["blocks_0"]["class_embed"].shape == (10, 1, 64)
