"""TARFlow's torch network (adapters/tarflow/network.py): reference layout and sizes, exact
inversion, the cached token-by-token reverse pass, the class embedding, the affine clip and
FLOPs, on tiny configurations (fixtures in conftest.py).

The references are independent of the code under test: the state_dict layout is written
out from the documented reference layout; the cached reverse pass is compared with a
token-by-token solve that only calls the data-to-noise pass; GFLOPs with torch's
FlopCounterMode.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from adapters import get_spec, list_models, load_sampler, model_info
from adapters.layers import patchify

TARFLOW_IDS = sorted(m for m in list_models() if get_spec(m).family == "tarflow")


def reference_layout(img_size, in_channels, patch_size, channels, num_blocks, layers_per_block,
                     num_classes, nvp=True):
    """state_dict names and shapes of apple/ml-tarflow's Model, as documented in
    shared/reference/models.md (written out here, not taken from our module)."""
    t, d, c = (img_size // patch_size) ** 2, in_channels * patch_size**2, channels
    layout = {"var": (t, d)}
    for i in range(num_blocks):
        b = f"blocks.{i}."
        layout.update({b + "proj_in.weight": (c, d), b + "proj_in.bias": (c,), b + "pos_embed": (t, c),
                       b + "proj_out.weight": (2 * d if nvp else d, c), b + "proj_out.bias": (2 * d if nvp else d,),
                       b + "attn_mask": (t, t)})
        if num_classes:
            layout[b + "class_embed"] = (num_classes, 1, c)
        for j in range(layers_per_block):
            a = f"{b}attn_blocks.{j}."
            layout.update({a + "attention.norm.weight": (c,), a + "attention.norm.bias": (c,),
                           a + "attention.qkv.weight": (3 * c, c), a + "attention.qkv.bias": (3 * c,),
                           a + "attention.proj.weight": (c, c), a + "attention.proj.bias": (c,),
                           a + "mlp.norm.weight": (c,), a + "mlp.norm.bias": (c,),
                           a + "mlp.main.0.weight": (4 * c, c), a + "mlp.main.0.bias": (4 * c,),
                           a + "mlp.main.2.weight": (c, 4 * c), a + "mlp.main.2.bias": (c,)})
    return layout


def reference_param_count(**cfg) -> int:
    layout = reference_layout(**cfg)
    buffers = [k for k in layout if k == "var" or k.endswith("attn_mask")]
    return sum(torch.Size(v).numel() for k, v in layout.items() if k not in buffers)


def affine_from_forward(block, x, k, y=None, attn_temp=1.0):
    """(a, b) of natural-order token k, read off the block's data-to-noise pass alone:
    z_k = (x_k - b) exp(-a), probed at x_k = 0 and x_k = 1."""
    x0, x1 = x.clone(), x.clone()
    x0[:, k], x1[:, k] = 0.0, 1.0
    z0 = block(x0, y, attn_temp=attn_temp)[0][:, k]
    z1 = block(x1, y, attn_temp=attn_temp)[0][:, k]
    inv_scale = z1 - z0  # exp(-a)
    return -torch.log(inv_scale), -z0 / inv_scale


def solve_block_uncached(block, z, y=None, guidance=0.0, attn_temp=1.0, annealed=False):
    """Invert one block token by token, O(T^2) full passes, no cache, no reverse code."""
    n, t, _ = z.shape
    order = list(range(t))[::-1] if block.flip else list(range(t))
    x = z.clone()
    for step, k in enumerate(order[1:]):
        a, b = affine_from_forward(block, x, k, y)
        if guidance > 0:
            a_u, b_u = affine_from_forward(block, x, k, None, attn_temp)
            g = (step + 1) / (t - 1) * guidance if annealed else guidance
            a, b = a + g * (a - a_u), b + g * (b - b_u)
        x[:, k] = z[:, k] * torch.exp(a) + b
    return x


def test_state_dict_matches_reference_layout(tiny_config):
    s = load_sampler("tarflow", **tiny_config)
    got = {k: tuple(v.shape) for k, v in s.net.state_dict().items()}
    cfg = {k: tiny_config[k] for k in ("img_size", "in_channels", "patch_size", "channels", "num_blocks",
                                "layers_per_block", "num_classes")}
    assert got == reference_layout(**cfg)
    assert s.info.params == reference_param_count(**cfg)


@pytest.mark.parametrize("model_id", TARFLOW_IDS)
def test_registered_variants_build_on_meta_with_expected_sizes(model_id):
    info = model_info(model_id)
    cfg = get_spec(model_id).config
    t = cfg.num_patches
    targets = {"itarflow-b2": 120e6, "itarflow-xl2": 690e6}  # BiFlow's published sizes
    reference = reference_param_count(
        img_size=cfg.img_size, in_channels=cfg.in_channels, patch_size=cfg.patch_size, channels=cfg.channels,
        num_blocks=cfg.num_blocks, layers_per_block=cfg.layers_per_block, num_classes=cfg.num_classes)
    assert info.params == reference  # same architecture as apple/ml-tarflow's Model
    if model_id in targets:
        assert abs(info.params / targets[model_id] - 1) < 0.03, info.params
    assert cfg.denoise and cfg.noise_std > 0  # every variant samples with the score step by default
    assert info.sequential_steps == cfg.num_blocks * (t - 1) + 1
    assert info.nfe == 2 and model_info(model_id, guidance=1.0).nfe == 3
    plain = model_info(model_id, denoise=False)
    assert plain.nfe == 1 and plain.sequential_steps == cfg.num_blocks * (t - 1)
    assert info.sample_shape == (cfg.in_channels, cfg.img_size, cfg.img_size)
    assert info.weights == "random-init" and info.gflops > 0


def test_variant_configs_are_the_published_ones():
    # tarflow-mini is the mini track's teacher (harness/track.py), not a published variant
    assert TARFLOW_IDS == ["itarflow-b2", "itarflow-xl2", "tarflow", "tarflow-afhq256", "tarflow-imagenet128",
                           "tarflow-imagenet64", "tarflow-mini"]
    expected = {  # (img, channels in, patch, width, blocks, layers, classes, sigma, space, image side)
        "tarflow-afhq256": (256, 3, 8, 768, 8, 8, 3, 0.07, "pixel", 256),
        "tarflow-imagenet64": (64, 3, 2, 768, 8, 8, 1000, 0.05, "pixel", 64),
        "tarflow-imagenet128": (128, 3, 4, 1024, 8, 8, 1000, 0.15, "pixel", 128),
    }
    for model_id, want in expected.items():
        c, info = get_spec(model_id).config, model_info(model_id)
        assert (c.img_size, c.in_channels, c.patch_size, c.channels, c.num_blocks, c.layers_per_block,
                c.num_classes, c.noise_std, info.space, info.image_size) == want
    for model_id in ("itarflow-b2", "itarflow-xl2"):
        c, info = get_spec(model_id).config, model_info(model_id)
        assert info.sample_shape == (4, 32, 32) and c.patch_size == 2 and c.num_patches == 256
        assert info.space == "latent" and info.image_size == 256 and info.num_classes == 1000
        assert c.affine_clip is not None and c.head_dim == 64 and c.expansion == 4


def test_generate_then_forward_recovers_the_noise_float64(tiny, noise_and_labels):
    s = tiny()
    z, y = noise_and_labels(s)
    x = s.generate(z, y, guidance=0.0, denoise=False)
    assert x.shape == z.shape and (x - z).abs().max() > 0.1  # the flow is not the identity
    with torch.no_grad():
        z_back, _ = s.net(x, y)
    torch.testing.assert_close(z_back, patchify(z, 2), rtol=0, atol=1e-10)


@pytest.mark.parametrize("block_index", [0, 1])  # identity order, then reversed order
@pytest.mark.parametrize("guidance, attn_temp, annealed", [(0.0, 1.0, False), (1.5, 0.7, False), (2.0, 1.0, True)])
def test_cached_reverse_equals_uncached_token_by_token_solve(block_index, guidance, attn_temp, annealed, tiny,
                                                             noise_and_labels):
    s = tiny()
    block = s.net.blocks[block_index]
    z, y = noise_and_labels(s)
    z = patchify(z, 2)
    with torch.no_grad():
        cached = block.reverse(z, y, guidance=guidance, attn_temp=attn_temp, annealed_guidance=annealed)
        uncached = solve_block_uncached(block, z, y, guidance, attn_temp, annealed)
    assert (cached - z).abs().max() > 0.05
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-9)


def test_mean_class_embedding_when_labels_are_none(tiny, noise_and_labels):
    s = tiny()
    z, _ = noise_and_labels(s)
    block = s.net.blocks[0]
    with torch.no_grad():
        a, b = affine_from_forward(block, patchify(z, 2), 3, None)
        mean_embed = block.class_embed.mean(dim=0, keepdim=True)
        saved = block.class_embed.clone()
        block.class_embed.copy_(mean_embed.expand_as(saved))  # every class = the mean
        a_all, b_all = affine_from_forward(block, patchify(z, 2), 3, torch.zeros(z.shape[0], dtype=torch.long))
        block.class_embed.copy_(saved)
    torch.testing.assert_close((a, b), (a_all, b_all), rtol=0, atol=1e-12)


def test_affine_clip_bounds_scale_and_shift(tiny, noise_and_labels):
    clipped = tiny(scale=0.5, affine_clip=0.2)
    free = tiny(scale=0.5)
    z, y = noise_and_labels(clipped)
    x = patchify(z, 2)
    with torch.no_grad():
        a_c, b_c = zip(*(affine_from_forward(clipped.net.blocks[0], x, k, y) for k in range(1, 16)))
        a_f, b_f = zip(*(affine_from_forward(free.net.blocks[0], x, k, y) for k in range(1, 16)))
    assert max(torch.stack(a_f).abs().max(), torch.stack(b_f).abs().max()) > 0.5  # the clip has work to do
    assert torch.stack(a_c).abs().max() <= 0.2 + 1e-9 and torch.stack(b_c).abs().max() <= 0.2 + 1e-9


def test_gflops_matches_flop_counter(tiny_config):
    s = load_sampler("tarflow", **{**tiny_config, "img_size": 16})  # T = 64
    x = torch.randn(2, *s.info.sample_shape)
    # FlopCounterMode sees no FLOPs inside the fused CPU attention kernel; the math
    # backend spells attention out as the matrix products it is.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        s.net(x)
    per_image = counter.get_total_flops() / 2 / 1e9
    assert s.info.gflops == pytest.approx(per_image, rel=0.02)
