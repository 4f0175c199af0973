"""The Rectified Flow sampler and the DiT backbone (adapters/flowmatch/model.py)."""

import doctest
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adapters import flowmatch, load_sampler, model_info
from adapters.api.errors import InputError
from adapters.flowmatch import model as flowmatch_model
from adapters.flowmatch.model import DiT, sincos_pos_embed_2d

from ..checkpoint_files import save

TINY = dict(hidden_size=32, depth=2, num_heads=2, input_size=8, num_classes=10, in_channels=4, space="latent")
LABELS = torch.tensor([0, 3, 9])


def _noise(n=3, seed=0):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _perturb(net: nn.Module, seed: int = 1) -> None:
    """Random non-zero weights everywhere: DiT's zero-init would make most checks trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _tiny(model="rf-mini", **overrides):
    s = load_sampler(model, **{**TINY, **overrides})
    _perturb(s.net)
    return s


class VelocityField(nn.Module):
    """Stands in for the network: v = fn(x, t), recording the times it was called at."""

    def __init__(self, fn, num_classes=10):
        super().__init__()
        self.fn, self.times = fn, []
        self.y_embedder = nn.Module()
        self.y_embedder.num_classes = num_classes

    def forward(self, x, t, y, h=None):
        self.times.append(float(t[0]))
        return self.fn(x, float(t[0]))


@pytest.mark.parametrize("steps", [1, 3])
def test_euler_on_a_straight_path_recovers_the_data_exactly(steps):
    s = load_sampler("rf-mini", **TINY)
    x0 = _noise(seed=5)
    # On x_t = (1 - t) x0 + t * noise the velocity noise - x0 equals (x_t - x0) / t.
    s.net = VelocityField(lambda x, t: (x - x0) / t)
    out = s.generate(_noise(), LABELS, num_steps=steps)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)
    assert s.net.times == pytest.approx(np.linspace(1, 0, steps + 1)[:-1].tolist())


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_euler_on_a_linear_field_matches_the_closed_form(steps):
    s = load_sampler("rf-mini", **TINY, num_steps=steps)  # steps from the config this time
    s.net = VelocityField(lambda x, t: 0.7 * x)
    z = _noise()
    # dt = -1/k each step: x <- x - 0.7 x / k, k times.
    torch.testing.assert_close(s.generate(z, LABELS), z * (1 - 0.7 / steps) ** steps)


def test_rf_guidance_zero_is_one_conditional_pass():
    s = _tiny()
    z = _noise()
    with torch.no_grad():
        v_c = s.net(z, torch.ones(3), LABELS)
    torch.testing.assert_close(s.generate(z, LABELS, guidance=0.0), z - v_c)
    torch.testing.assert_close(s.generate(z, LABELS), z - v_c)  # config default guidance is 0


def test_rf_guidance_formula_against_direct_computation():
    s = _tiny()
    z = _noise()
    g = 1.5
    with torch.no_grad():
        v_c = s.net(z, torch.ones(3), LABELS)
        v_u = s.net(z, torch.ones(3), torch.full((3,), 10))  # the null class is row num_classes
    assert (v_c - v_u).abs().max() > 1e-3  # the check below is not trivial
    torch.testing.assert_close(s.generate(z, LABELS, guidance=g), z - (v_c + g * (v_c - v_u)),
                               atol=1e-5, rtol=1e-5)


def test_rf_guided_step_costs_two_evaluations_in_one_batch():
    s = _tiny()
    batches = []
    s.net.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    s.generate(_noise(), LABELS, guidance=2.0, num_steps=2)
    assert batches == [6, 6]  # cond + uncond per step, batched


def test_rf_unconditional_uses_the_null_class_and_refuses_guidance():
    s = _tiny()
    z = _noise()
    with torch.no_grad():
        v = s.net(z, torch.ones(3), torch.full((3,), 10))
    torch.testing.assert_close(s.generate(z, None), z - v)
    with pytest.raises(InputError, match="guidance 1.0 needs class labels"):
        s.generate(z, None, guidance=1.0)


def test_nfe_follows_the_config():
    assert model_info("rf-mini", **TINY).nfe == 1
    assert model_info("rf-mini", **TINY, guidance=0.5).nfe == 2
    assert model_info("rf-mini", **TINY, guidance=0.5, num_steps=4).nfe == 8
    info = model_info("rf-mini", **TINY)
    assert (info.sample_shape, info.image_size, info.space, info.family) == ((4, 8, 8), 64, "latent", "rectified-flow")


def test_the_old_name_steps_still_works_and_says_it_is_deprecated():
    """Issue 21: the step count is num_steps in every family; steps (config field and generate
    option) is its deprecated alias here, with the same effect."""
    s = _tiny()
    z = _noise()
    with pytest.warns(DeprecationWarning, match="steps is deprecated: use num_steps"):
        old = s.generate(z, LABELS, steps=3)
    torch.testing.assert_close(old, s.generate(z, LABELS, num_steps=3), rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match=r"config option steps is deprecated: use num_steps \(steps=4 sets "
                                                r"num_steps=4\)"):
        info = model_info("rf-mini", **TINY, guidance=0.5, steps=4)
    assert info.nfe == 8 and info.sequential_steps == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns about nothing
        s.generate(z, LABELS, num_steps=2)
        assert model_info("rf-mini", **TINY, num_steps=2).nfe == 2
    assert s.family_options == ("num_steps",)  # what sweeps and --options see: one name
    with pytest.raises(InputError, match="steps is the deprecated name of num_steps; give num_steps only"):
        s.generate(z, LABELS, steps=2, num_steps=2)


def test_deterministic_shape_preserving_and_random_init_returns_the_noise():
    s = load_sampler("rf-mini", **TINY)
    z = _noise()
    out = s.generate(z, LABELS)
    assert out.shape == z.shape
    # adaLN-Zero: untrained nets predict zero velocity, so samples are the (distinct) noises.
    torch.testing.assert_close(out, z)
    p = _tiny()
    torch.testing.assert_close(p.generate(z, LABELS), p.generate(z.clone(), LABELS.clone()), rtol=0, atol=0)


def test_pos_embed_matches_dits_numpy_formula():
    dim, grid = 16, 4
    # DiT's construction: meshgrid(w, h); first half of channels from grid[0], second from grid[1].
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def one(pos):
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    expected = np.concatenate([one(gw), one(gh)], axis=1)
    np.testing.assert_allclose(sincos_pos_embed_2d(dim, grid).numpy(), expected, atol=1e-6)


def test_output_tokens_use_dits_layout():
    net = DiT(input_size=4, hidden_size=16, depth=1, num_heads=2, num_classes=2)
    tokens = torch.arange(1 * 4 * 16, dtype=torch.float32).view(1, 4, 16)  # (N, T, p*p*C)
    img = net.unpatchify(tokens)  # (1, 4, 4, 4)
    # DiT: token features are (p, q, c) with c fastest; token 1 is the patch at columns 2-3.
    assert img[0, :, 0, 0].tolist() == tokens[0, 0, 0:4].tolist()
    assert img[0, :, 0, 1].tolist() == tokens[0, 0, 4:8].tolist()
    assert img[0, :, 1, 0].tolist() == tokens[0, 0, 8:12].tolist()
    assert img[0, :, 0, 2].tolist() == tokens[0, 1, 0:4].tolist()


def test_state_dict_keys_follow_dit():
    # facebookresearch/DiT models.py names (timm PatchEmbed / Attention / Mlp inside), depth 1.
    block = [f"blocks.0.{k}.{w}" for k in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1")
             for w in ("weight", "bias")]
    expected = {"pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias", "y_embedder.embedding_table.weight",
                *(f"t_embedder.mlp.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")), *block,
                *(f"final_layer.{k}.{w}" for k in ("linear", "adaLN_modulation.1") for w in ("weight", "bias"))}
    sd = DiT(input_size=4, hidden_size=16, depth=1, num_heads=2, num_classes=10).state_dict()
    assert set(sd) == expected
    assert sd["y_embedder.embedding_table.weight"].shape == (11, 16)  # num_classes + the null class
    assert sd["final_layer.linear.weight"].shape == (16, 16)  # p*p*C outputs: no learned sigma


def test_checkpoint_round_trip(tmp_path):
    s = _tiny()
    loaded = load_sampler("rf-mini", checkpoint=save(tmp_path, s.net.state_dict(), "rf.pt"), **TINY)
    assert loaded.info.weights.startswith("sha256:")
    z = _noise()
    torch.testing.assert_close(loaded.generate(z, LABELS), s.generate(z, LABELS), rtol=0, atol=0)


def test_misshaped_checkpoint_names_the_tensor(tmp_path):
    sd = load_sampler("rf-mini", **TINY).net.state_dict()
    sd["final_layer.linear.weight"] = torch.zeros(8, 32)
    path = save(tmp_path, sd, "bad.pt")
    with pytest.raises(InputError, match=r"mis-shaped tensors: final_layer\.linear\.weight"):
        load_sampler("rf-mini", checkpoint=path, **TINY)
    with pytest.raises(InputError, match=r"missing tensors: h_embedder"):
        # the two-time DiT of adapters/meanflow (which has no space option: it is latent)
        load_sampler("meanflow-b2", checkpoint=path, **{k: v for k, v in TINY.items() if k != "space"})


def test_bad_inputs_are_input_errors():
    s = load_sampler("rf-mini", **TINY)
    with pytest.raises(InputError, match="labels must lie in"):
        s.generate(_noise(), torch.tensor([0, 1, 10]))
    with pytest.raises(InputError, match=r"expected \(N, 4, 8, 8\)"):
        s.generate(torch.randn(3, 4, 16, 16), LABELS)
    with pytest.raises(InputError, match="num_steps must be a positive integer"):
        s.generate(_noise(), LABELS, num_steps=0)
    with pytest.raises(InputError, match="guidance must be a finite number"):
        s.generate(_noise(), LABELS, guidance=float("nan"))
    with pytest.raises(InputError, match="num_steps must be a positive integer"):
        load_sampler("rf-mini", **TINY, num_steps=0)
    with pytest.raises(InputError, match="num_steps must be an integer, got 1.5"):  # the field's type, checked first
        load_sampler("rf-mini", **TINY, num_steps=1.5)
    with pytest.raises(InputError, match="not divisible by num_heads"):
        model_info("rf-mini", **{**TINY, "num_heads": 3})


@pytest.mark.parametrize("size,dit_gflops", [(dict(hidden_size=768, depth=12, num_heads=12), 23.1),
                                             (dict(hidden_size=1152, depth=28, num_heads=16), 119.0)])
def test_gflops_match_dits_multiply_adds(size, dit_gflops):
    # DiT-B/2 and XL/2 on the 4x32x32 latent: DiT's "Gflops" count multiply-adds; ours count each as 2 FLOPs.
    b2 = dict(input_size=32, in_channels=4, num_classes=1000, space="latent")
    assert model_info("rf-mini", **b2, **size).gflops / 2 == pytest.approx(dit_gflops, rel=0.03)


def test_computed_positions_are_the_same_positions_outside_the_state_dict():
    size = dict(input_size=8, hidden_size=16, depth=1, num_heads=2, num_classes=2)
    stored, computed = DiT(**size), DiT(**size, computed_positions=True)
    assert "pos_embed" in stored.state_dict() and "pos_embed" not in computed.state_dict()
    assert sum(p.numel() for p in stored.parameters()) - sum(p.numel() for p in computed.parameters()) == 16 * 16
    torch.testing.assert_close(computed.pos_embed, stored.pos_embed, rtol=0, atol=0)


@pytest.mark.parametrize("two_times,size", [(False, "tiny"), (True, "tiny"), (False, "b2")])
def test_gflops_formula_matches_flop_counter(two_times, size):
    # The meta device: FlopCounterMode sees every matmul, and CPU SDPA kernels would count 0.
    cfg = dict(input_size=8, hidden_size=64, depth=3, num_heads=4, num_classes=10) if size == "tiny" else {}
    with torch.device("meta"):
        net = DiT(**cfg, two_times=two_times)
        x = torch.empty(2, 4, net.grid * 2, net.grid * 2)
        t, y = torch.empty(2), torch.zeros(2, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        net(x, t, y, t if two_times else None)
    assert net.flops() == pytest.approx(counter.get_total_flops() / 2, rel=0.02)


def test_docstring_examples_run():
    assert doctest.testmod(flowmatch).failed == 0
    assert doctest.testmod(flowmatch_model).failed == 0
