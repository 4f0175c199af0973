"""iMF (adapters/imf): released-checkpoint compatibility and sampler parity with the official code
(github:Lyy-iiis/imeanflow, branch torch, under $NFEBENCH_REFERENCE_DIR/imf), sizes, FLOPs, defaults
and bad input."""

import doctest
import re
import warnings
from functools import partial

import pytest
import torch

import adapters.imf
import adapters.imf.model
from adapters import load_sampler, model_info
from adapters.api.checkpoint import CheckpointWarning
from adapters.api.errors import InputError
from adapters.imf.model import IMFDiT, reference_key
from adapters.vae import SD_VAE_MSE_REPO

from ..checkpoint_files import save
from ..random_weights import seeded_init
from . import official
from .official import rel_dev

REPO = ("imf", "Lyy-iiis/imeanflow")
# A small imfDiT: the reference factory's keyword arguments, and the same network as nfebench overrides.
REF_TINY = dict(depth=3, hidden_size=64, patch_size=2, num_heads=4, aux_head_depth=1)
TINY = dict(hidden_size=64, depth=3, num_heads=4, head_depth=1, input_size=8, num_classes=10)
LABELS = torch.tensor([0, 3, 9])
TOL = 1e-4  # relative: max |ours - reference| / max |reference|, float32

# The reference module's parameter counts (imf.iMeanFlow(<factory>), v_final_layer included),
# literal so that CI, without the reference code, still checks them.
PARAMS = {"imf-b2": 88_948_256, "imf-m2": 173_921_312, "imf-l2": 409_071_648, "imf-xl2": 610_433_056}
FACTORY = {"imf-b2": "imfDiT_B_2", "imf-m2": "imfDiT_M_2", "imf-l2": "imfDiT_L_2", "imf-xl2": "imfDiT_XL_2"}


def _noise(n=3, side=8, seed=0):
    return torch.randn(n, 4, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def imf_ref(reference_code):
    imf, = reference_code(*REPO, "imf")
    return imf


@pytest.fixture
def reference(imf_ref, monkeypatch, randomize_constants):
    """A small reference iMeanFlow with random non-zero weights (gates, norms, biases and the zero-initialised
    final layers perturbed)."""
    monkeypatch.setattr(imf_ref.imfDiT, "imfDiT_tiny", partial(imf_ref.imfDiT.imfDiT, **REF_TINY), raising=False)
    model = seeded_init(0, imf_ref.iMeanFlow, "imfDiT_tiny", img_size=8, num_classes=10)
    randomize_constants(model, 1)
    return model


@pytest.fixture
def loaded(reference, tmp_path):
    """(reference module, nfebench sampler loaded from the reference's saved state_dict)."""
    return reference, load_sampler("imf-b2", checkpoint=save(tmp_path, reference.state_dict(), "iMF-tiny.pth"), **TINY)


def test_reference_state_dict_loads_unchanged(reference, tmp_path):
    path = tmp_path / "iMF-tiny.pth"
    sd = reference.state_dict()
    assert all(k.startswith("net.") for k in sd)  # the released files' layout
    torch.save(sd, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)  # strict: nothing ignored
        s = load_sampler("imf-b2", checkpoint=str(path), **TINY)
    assert s.info.weights.startswith("sha256:") and "#" not in s.info.weights
    ours = s.net.state_dict()
    assert {reference_key(k) for k in sd} == set(ours)
    for k, v in sd.items():
        assert torch.equal(ours[reference_key(k)], v), k
    assert s.info.params == sum(p.numel() for p in reference.parameters())


def test_reference_names_map_to_the_modules(tmp_path):
    # The official module's names (models/imfDiT.py: TorchLinear wraps nn.Linear as `_flax_linear`,
    # TorchEmbedding nn.Embedding as `_flax_embedding`), checked without the reference code.
    assert reference_key("net.shared_blocks.0.attn.q_proj._flax_linear.weight") == "shared_blocks.0.attn.q_proj.weight"
    assert reference_key("net.y_embedder.embedding_table._flax_embedding.weight") == "y_embedder.embedding_table.weight"
    assert reference_key("net.x_embedder.proj.bias") == "x_embedder.proj.bias"
    s = load_sampler("imf-b2", **TINY)
    linears = {n for n, m in s.net.named_modules() if isinstance(m, torch.nn.Linear)}
    wrapped = {}
    for k, v in s.net.state_dict().items():
        owner, _, leaf = k.rpartition(".")
        wrapper = "_flax_embedding" if owner == "y_embedder.embedding_table" else "_flax_linear" if owner in linears \
            else None
        wrapped[f"net.{owner}.{wrapper}.{leaf}" if wrapper else f"net.{k}"] = v
    assert "net.u_heads.0.mlp.w2._flax_linear.weight" in wrapped and "net.u_heads.0.attn_scale" in wrapped
    path = tmp_path / "released-layout.pth"
    torch.save(wrapped, path)
    loaded = load_sampler("imf-b2", checkpoint=str(path), **TINY)
    torch.testing.assert_close(loaded.generate(_noise(), LABELS), s.generate(_noise(), LABELS), rtol=0, atol=0)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("setting", list(official.SETTINGS))  # "config defaults", imf-b2's: omega 8.0 on [0.4, 0.65]
def test_matches_the_reference_sampler(loaded, steps, setting):
    z = _noise()
    ref, ours = official.samples_of_setting(*loaded, z, LABELS, steps, setting)
    assert rel_dev(ours, ref) <= TOL
    assert (ref - z).abs().max() > 0.5  # the network moved the sample: the comparison has teeth


def test_guidance_and_interval_are_inputs_that_change_the_sample(loaded):
    _, s = loaded
    z = _noise()
    base = s.generate(z, LABELS, guidance=0.0, guidance_interval=(0.0, 1.0))
    assert (s.generate(z, LABELS, guidance=4.0, guidance_interval=(0.0, 1.0)) - base).abs().max() > 1e-3
    assert (s.generate(z, LABELS, guidance=0.0, guidance_interval=(0.3, 0.7)) - base).abs().max() > 1e-3
    calls = []
    s.net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    s.generate(z, LABELS, guidance=4.0, num_steps=2)
    assert calls == [3, 3]  # one evaluation per step, guidance included: NFE = num_steps


def test_unconditional_is_the_null_class(loaded):
    reference, s = loaded
    z = _noise()
    ref = official.reference_sample(reference, z, torch.full((3,), 10), 1, 1.0, 0.0, 1.0)
    assert rel_dev(s.generate(z, None, guidance=0.0, guidance_interval=(0.0, 1.0)), ref) <= TOL


@pytest.mark.slow
def test_full_size_b2_matches_the_reference(imf_ref, randomize_constants, tmp_path):
    reference = seeded_init(0, imf_ref.iMeanFlow, "imfDiT_B_2")
    randomize_constants(reference, 2)
    s = load_sampler("imf-b2", checkpoint=save(tmp_path, reference.state_dict(), "iMF-B-2.pth"))
    z = _noise(n=2, side=32)
    labels = torch.tensor([207, 974])
    ref = official.reference_sample(reference, z, labels, 1, 8.0, 0.4, 0.65)
    assert rel_dev(s.generate(z, labels), ref) <= TOL  # the README's B/2 setting is the default


@pytest.mark.parametrize("model", list(PARAMS))
def test_parameter_counts_equal_the_reference_modules(model):
    assert model_info(model).params == PARAMS[model]


@pytest.mark.parametrize("model", list(PARAMS))
def test_parameter_table_is_the_reference_modules_count(imf_ref, model):
    with torch.device("meta"):
        reference = imf_ref.iMeanFlow(FACTORY[model])
    assert sum(p.numel() for p in reference.parameters()) == PARAMS[model]


@pytest.mark.parametrize("size", ["tiny", "b2"])
def test_gflops_formula_matches_the_flop_counter(size):
    # The meta device: FlopCounterMode sees every matmul and attention kernel.
    cfg = dict(input_size=8, hidden_size=64, depth=3, num_heads=4, mlp_hidden=96, num_classes=10, head_depth=1) \
        if size == "tiny" else {}
    with torch.device("meta"):
        net = IMFDiT(**cfg)
    assert net.flops() == pytest.approx(official.flops_per_sample(net), rel=1e-6)


def _readme_settings(imf_ref):
    """{(factory, num_steps): (omega, t_min, t_max)} from the README's evaluate commands."""
    return {(factory, steps): guidance for factory, steps, guidance in official.readme_settings(imf_ref)}


def test_defaults_are_the_readme_evaluation_commands(imf_ref):
    settings = _readme_settings(imf_ref)
    assert len(settings) == 5  # B, M, L, XL at 1 step and XL at 2
    for (factory, steps), (omega, t_min, t_max) in settings.items():
        model = {v: k for k, v in FACTORY.items()}[factory]
        s = load_sampler(model, device="meta", num_steps=steps)
        assert (s.config.guidance, s.config.interval_min, s.config.interval_max) == pytest.approx(
            (omega - 1, t_min, t_max)), (factory, steps)
        assert s.info.nfe == steps


def test_defaults_follow_the_configured_steps():
    xl = load_sampler("imf-xl2", device="meta")
    assert (xl.config.guidance, xl.config.interval_min, xl.config.interval_max) == (7.0, 0.42, 0.62)
    two = load_sampler("imf-xl2", device="meta", num_steps=2)
    assert (two.config.guidance, two.config.interval_min, two.config.interval_max) == (3.0, 0.36, 0.64)
    assert (two.info.nfe, two.info.sequential_steps) == (2, 2)
    # Sizes without a two-step command keep their one-step setting; explicit overrides win.
    b2 = load_sampler("imf-b2", device="meta", num_steps=2, interval_max=0.7)
    assert (b2.config.guidance, b2.config.interval_min, b2.config.interval_max) == (7.0, 0.4, 0.7)


def test_random_init_predicts_zero_velocity_and_is_deterministic():
    s = load_sampler("imf-b2", **TINY)
    z = _noise()
    torch.testing.assert_close(s.generate(z, LABELS), z)  # gates and final layer start at zero
    assert s.info.weights == "random-init"
    assert (s.info.space, s.info.sample_shape, s.info.image_size, s.info.family) == ("latent", (4, 8, 8), 64, "imf")


def test_bfloat16_close_to_float32(loaded, tmp_path):
    _, s = loaded
    assert official.bfloat16_deviation(s, TINY, tmp_path, _noise(), LABELS, num_steps=2) <= 5e-2


def test_decoder_is_ft_mse_with_the_references_latent_normalisation(imf_ref):
    s = load_sampler("imf-b2", device="meta")
    assert s.vae_spec.repo == SD_VAE_MSE_REPO
    src = (official.root(imf_ref) / "utils" / "vae_util.py").read_text()

    def table(name):
        values = re.search(rf"self\.{name} = torch\.tensor\(\[(.*?)\]", src).group(1)
        return torch.tensor([float(v) for v in values.split(",")])

    mean, std = table("mean"), table("std")
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    # The reference decodes latents * std + mean.
    torch.testing.assert_close(s.vae_spec.norm.to_vae(x), x * std.view(-1, 1, 1) + mean.view(-1, 1, 1))


def test_a_checkpoint_of_another_size_names_every_bad_tensor(reference, tmp_path):
    path = save(tmp_path, reference.state_dict(), "ckpt.pth")
    with pytest.raises(InputError) as err:  # one block fewer, half the heads' width
        load_sampler("imf-b2", checkpoint=path, **{**TINY, "depth": 2, "hidden_size": 32, "num_heads": 2})
    msg = str(err.value)
    assert "unexpected tensors: shared_blocks.1.attn.k_norm.weight" in msg
    assert "mis-shaped tensors: cfg_t_end_embedder.mlp.0.bias (file (64,), model (32,))" in msg
    assert "(50 in all)" in msg  # every mis-shaped tensor counted, the first ten named
    with pytest.raises(InputError, match=r"missing tensors: shared_blocks\.2\.attn\.k_norm\.weight.*\(26 in all\)"):
        load_sampler("imf-b2", checkpoint=path, **{**TINY, "depth": 5})
    with pytest.raises(InputError, match=r"mis-shaped tensors: .*y_embedder\.embedding_table\.weight "
                                         r"\(file \(11, 64\), model \(1001, 64\)\)"):
        load_sampler("imf-b2", checkpoint=path, **{**TINY, "num_classes": 1000})


def test_imf_loads_strictly(reference, tmp_path):
    sd = dict(reference.state_dict())
    sd["net.v_heads.0.attn_scale"] = torch.zeros(64)  # a training checkpoint's v head: not iMF's evaluation model
    with pytest.raises(InputError, match=r"unexpected tensors: v_heads\.0\.attn_scale"):
        load_sampler("imf-b2", checkpoint=save(tmp_path, sd, "ckpt.pth"), **TINY)


@pytest.mark.parametrize("kwargs,match", [
    (dict(guidance_interval=(-0.1, 0.5)), r"0 <= t_min <= t_max <= 1"),
    (dict(guidance_interval=(0.2, 1.5)), r"0 <= t_min <= t_max <= 1"),
    (dict(guidance_interval=(0.7, 0.3)), r"guidance_interval \(0.7, 0.3\) must satisfy"),
    (dict(guidance_interval=(0.5,)), "must be a pair"),
    (dict(guidance_interval=(0.1, float("nan"))), "must be a pair"),
    (dict(num_steps=0), "num_steps must be a positive integer"),
    (dict(num_steps=1.5), "num_steps must be a positive integer"),
    (dict(num_steps=True), "num_steps must be a positive integer"),
    (dict(guidance=-0.5), r"guidance must be >= 0"),
    (dict(guidance=float("inf")), "guidance must be a finite number"),
    (dict(steps=2), r"unknown option\(s\) steps; this family accepts: guidance_interval, num_steps"),
])
def test_bad_sampling_options_are_input_errors(kwargs, match):
    s = load_sampler("imf-b2", **TINY)
    with pytest.raises(InputError, match=match):
        s.generate(_noise(), LABELS, **kwargs)


@pytest.mark.parametrize("overrides,match", [
    (dict(num_steps=0), "num_steps must be a positive integer"),
    (dict(interval_min=0.8, interval_max=0.2), "must satisfy 0 <= t_min <= t_max <= 1"),
    (dict(guidance=-2.0), "guidance must be >= 0"),
    (dict(num_heads=5), "not .*divisible|must be a whole head width"),
    (dict(head_depth=4), r"head_depth 4 must lie in \[0, depth=3\]"),
    (dict(input_size=9), "not a multiple of patch_size"),
])
def test_bad_configs_are_input_errors(overrides, match):
    with pytest.raises(InputError, match=match):
        load_sampler("imf-b2", **{**TINY, **overrides})


def test_docstring_examples_run():
    for module in (adapters.imf, adapters.imf.model):
        assert doctest.testmod(module).failed == 0
