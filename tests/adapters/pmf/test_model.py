"""pMF (adapters/pmf): released-checkpoint compatibility and sampler parity with the official code
(github:Lyy-iiis/pMF, branch torch, under $NFEBENCH_REFERENCE_DIR/pmf), the noise scale, sizes, FLOPs,
defaults and bad input."""

import doctest
import warnings
from functools import partial

import pytest
import torch
from torch import nn

import adapters.pmf
import adapters.pmf.model
from adapters import load_sampler, model_info
from adapters.api.checkpoint import CheckpointWarning
from adapters.api.errors import InputError
from adapters.imf.model import reference_key
from adapters.pmf.model import PMFDiT

from ..checkpoint_files import save
from ..imf import official
from ..imf.official import rel_dev
from ..random_weights import seeded_init

REPO = ("pmf", "Lyy-iiis/pMF")
REF_TINY = dict(depth=3, hidden_size=64, patch_size=4, num_heads=4, aux_head_depth=1)
TINY = dict(hidden_size=64, depth=3, num_heads=4, head_depth=1, input_size=16, patch_size=4, num_classes=10)
LABELS = torch.tensor([0, 3, 9])
TOL = 1e-4  # relative: max |ours - reference| / max |reference|, float32

# The reference module's parameter counts (pmf.pixelMeanFlow(<factory>) in evaluation mode), literal
# so that CI, without the reference code, still checks them.
PARAMS = {"pmf-b16": 118_234_240, "pmf-l16": 410_320_768, "pmf-h16": 955_508_992,
          "pmf-b32": 120_300_928, "pmf-l32": 412_977_280, "pmf-h32": 959_050_240}
FACTORY = {m: "pmfDiT_" + m[4].upper() + "_" + m[5:] for m in PARAMS}  # pmf-b16 -> pmfDiT_B_16
NOISE_SCALE = {"pmf-b16": 1.0, "pmf-l16": 1.0, "pmf-h16": 2.0, "pmf-b32": 2.0, "pmf-l32": 4.0, "pmf-h32": 4.0}


def _noise(n=3, side=16, seed=0):
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def pmf_ref(reference_code):
    pmf, = reference_code(*REPO, "pmf")
    return pmf


@pytest.fixture
def reference(pmf_ref, monkeypatch, randomize_constants):
    """A small reference pixelMeanFlow built through the pmfDiT_B_32 name (so with B/32's noise scale, 2)
    and random non-zero weights (gates, norms, biases and the zero-initialised final layer perturbed)."""
    monkeypatch.setattr(pmf_ref.pmfDiT, "pmfDiT_B_32", partial(pmf_ref.pmfDiT.pmfDiT, **REF_TINY))
    model = seeded_init(0, pmf_ref.pixelMeanFlow, "pmfDiT_B_32", img_size=16, num_classes=10)
    randomize_constants(model, 1)
    return model


def _load(path, **overrides):
    with pytest.warns(CheckpointWarning) as record:
        s = load_sampler("pmf-b32", checkpoint=path, **{**TINY, **overrides})
    return s, " ".join(str(w.message) for w in record)


@pytest.fixture
def loaded(reference, tmp_path):
    """(reference module, nfebench sampler loaded from the reference's saved state_dict)."""
    s, _ = _load(save(tmp_path, reference.state_dict()))
    return reference, s


def test_reference_state_dict_loads_naming_the_one_ignored_key(reference, tmp_path):
    sd = reference.state_dict()
    assert all(k.startswith("net.") for k in sd) and reference.noise_scale == 2.0
    s, message = _load(save(tmp_path, sd))
    assert "ignored 1 tensors (rope_freqs)" in message and "strict=False" in message
    ours = s.net.state_dict()
    assert {reference_key(k) for k in sd} - set(ours) == {"rope_freqs"}
    assert set(ours) <= {reference_key(k) for k in sd}
    for k, v in sd.items():
        if reference_key(k) in ours:
            assert torch.equal(ours[reference_key(k)], v), k
    assert s.info.params == sum(p.numel() for p in reference.parameters())
    assert s.info.weights.startswith("sha256:")


def test_a_training_state_dict_loads_with_its_v_head_named(pmf_ref, randomize_constants, tmp_path, loaded):
    reference, _ = loaded
    train_net = seeded_init(3, pmf_ref.pmfDiT.pmfDiT, input_size=16, in_channels=3, num_classes=10, eval_mode=False,
                            **REF_TINY)
    randomize_constants(train_net, 4)
    sd = {**{"net." + k: v for k, v in train_net.state_dict().items()},
          **{k: v for k, v in reference.state_dict().items()}}  # the evaluated weights; v head on top
    s, message = _load(save(tmp_path, sd))
    assert "v_heads.0.attn.k_norm.weight" in message and "v_final_layer.linear.bias" in message
    z = _noise()
    ref = official.reference_sample(reference, z, LABELS, 1, 2.0, s.config.interval_min, s.config.interval_max)
    assert rel_dev(s.generate(z, LABELS, guidance=1.0), ref) <= TOL


def test_every_other_key_loads_strictly(reference, tmp_path):
    sd = {**reference.state_dict(), "net.extra_table": torch.zeros(3)}
    with pytest.raises(InputError, match="unexpected tensors: extra_table"):
        _load(save(tmp_path, sd))


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("setting", list(official.SETTINGS))  # "config defaults", pmf-b32's: omega 6.5 on [0.1, 0.7]
def test_matches_the_reference_sampler(loaded, steps, setting):
    z = _noise()
    ref, ours = official.samples_of_setting(*loaded, z, LABELS, steps, setting)
    assert rel_dev(ours, ref) <= TOL
    assert (ref - 2 * z).abs().max() > 0.5  # the network moved the (scaled) noise: the comparison has teeth


def test_unconditional_is_the_null_class(loaded):
    reference, s = loaded
    z = _noise()
    ref = official.reference_sample(reference, z, torch.full((3,), 10), 2, 1.0, 0.0, 1.0)
    assert rel_dev(s.generate(z, None, guidance=0.0, guidance_interval=(0.0, 1.0), num_steps=2), ref) <= TOL


class Recorder(nn.Module):
    """Stands in for the network: returns x-prediction u = z (so each step scales z by 1 - h) and
    records the z it was called with."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, z, t, h, omega, t_min, t_max, y):
        self.inputs.append(z.clone())
        return z


@pytest.mark.parametrize("model", list(NOISE_SCALE))
def test_the_noise_scale_is_applied_to_standard_normal_noise(model):
    s = load_sampler(model, **TINY)
    assert s.noise_scale == s.config.noise_scale == NOISE_SCALE[model]
    s.net = Recorder()
    z = _noise()
    s.generate(z, LABELS, num_steps=2)
    torch.testing.assert_close(s.net.inputs[0], NOISE_SCALE[model] * z, rtol=0, atol=0)
    torch.testing.assert_close(s.net.inputs[1], NOISE_SCALE[model] * z * 0.5)  # z - 0.5 * u with u = z


@pytest.mark.slow
def test_full_size_b16_matches_the_reference(pmf_ref, randomize_constants, tmp_path):
    reference = seeded_init(0, pmf_ref.pixelMeanFlow, "pmfDiT_B_16")
    randomize_constants(reference, 2)
    with pytest.warns(CheckpointWarning, match="rope_freqs"):
        s = load_sampler("pmf-b16", checkpoint=save(tmp_path, reference.state_dict(), "pMF-B-16.pt"))
    z = _noise(n=2, side=256)
    labels = torch.tensor([207, 974])
    ref = official.reference_sample(reference, z, labels, 1, 7.5, 0.1, 0.8)
    assert rel_dev(s.generate(z, labels), ref) <= TOL  # evaluate.py's defaults are pmf-b16's


@pytest.mark.parametrize("model", list(PARAMS))
def test_parameter_counts_equal_the_reference_modules(model):
    assert model_info(model).params == PARAMS[model]


@pytest.mark.parametrize("model", list(PARAMS))
def test_sizes_and_noise_scales_are_the_reference_modules(pmf_ref, model):
    side = 16 * int(FACTORY[model].split("_")[-1])  # as the reference's evaluate.py builds it
    with torch.device("meta"):
        reference = pmf_ref.pixelMeanFlow(FACTORY[model], img_size=side)
    assert sum(p.numel() for p in reference.parameters()) == PARAMS[model]
    assert reference.noise_scale == NOISE_SCALE[model]
    assert model_info(model).sample_shape == (3, side, side)


@pytest.mark.parametrize("size", ["tiny", "h16"])
def test_gflops_formula_matches_the_flop_counter(size):
    cfg = dict(input_size=16, patch_size=4, hidden_size=64, depth=3, num_heads=4, mlp_hidden=96, num_classes=10,
               head_depth=1, bottleneck_channels=8) if size == "tiny" else \
        dict(hidden_size=1280, depth=48, num_heads=16, mlp_hidden=3416, bottleneck_channels=256)
    with torch.device("meta"):
        net = PMFDiT(**cfg)
    assert net.flops() == pytest.approx(official.flops_per_sample(net), rel=1e-6)


def _readme_settings(pmf_ref):
    """{factory: (omega, t_min, t_max)} from the README's evaluate commands (pMF-B/16's gives no flag), all one-step."""
    settings = official.readme_settings(pmf_ref)
    assert all(steps == 1 for _, steps, _ in settings)
    return {factory: guidance for factory, _, guidance in settings}


def test_defaults_are_the_readme_evaluation_commands(pmf_ref):
    settings = _readme_settings(pmf_ref)
    assert set(settings) == set(FACTORY.values())
    for model, factory in FACTORY.items():
        s = load_sampler(model, device="meta")
        omega, t_min, t_max = settings[factory]
        assert (s.config.guidance, s.config.interval_min, s.config.interval_max) == pytest.approx(
            (omega - 1, t_min, t_max)), model
        assert s.info.nfe == 1


def test_bfloat16_close_to_float32(loaded, tmp_path):
    _, s = loaded
    assert official.bfloat16_deviation(s, TINY, tmp_path, _noise(), LABELS, num_steps=2) <= 5e-2


def test_pixel_space_without_a_decoder():
    s = load_sampler("pmf-b16", **TINY)
    info = s.info
    assert (info.space, info.sample_shape, info.image_size, info.family) == ("pixel", (3, 16, 16), 16, "pmf")
    assert s.decoder is None
    x = torch.linspace(-3, 3, 3 * 16 * 16).view(1, 3, 16, 16)
    torch.testing.assert_close(s.decode(x), x.clamp(-1, 1))  # the reference clips (x + 1) / 2 to [0, 1]
    # Random init (the reference's): the final layer is zero, so x-prediction gives 0, the grey image.
    torch.testing.assert_close(s.generate(_noise(), LABELS), torch.zeros(3, 3, 16, 16))


def test_checkpoints_of_the_other_family_name_every_bad_tensor(reference, reference_code, monkeypatch, tmp_path):
    pmf_file = save(tmp_path, reference.state_dict(), "pmf.pt")
    with pytest.raises(InputError) as err:
        load_sampler("imf-b2", checkpoint=pmf_file, hidden_size=64, depth=3, num_heads=4, head_depth=1,
                     input_size=16, patch_size=4, in_channels=3, num_classes=10)
    msg = str(err.value)
    assert "missing tensors: v_final_layer.linear.bias, v_final_layer.linear.weight, v_final_layer.norm.weight, " \
           "x_embedder.proj.bias, x_embedder.proj.weight" in msg
    assert "unexpected tensors: pos_embed, rope_freqs, x_embedder.proj1.bias" in msg
    assert "mis-shaped tensors: class_tokens (file (1, 8, 64), model (8, 64))" in msg

    imf, = reference_code("imf", "Lyy-iiis/imeanflow", "imf")
    monkeypatch.setattr(imf.imfDiT, "imfDiT_tiny", partial(imf.imfDiT.imfDiT, **REF_TINY), raising=False)
    imf_model = seeded_init(0, imf.iMeanFlow, "imfDiT_tiny", img_size=16, img_channels=3, num_classes=10)
    imf_file = save(tmp_path, imf_model.state_dict(), "imf.pth")
    with pytest.raises(InputError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)  # its v_final_layer is ignored by name, and named
        load_sampler("pmf-b32", checkpoint=imf_file, **TINY)
    msg = str(err.value)
    assert "missing tensors: pos_embed, x_embedder.proj1.bias, x_embedder.proj1.weight" in msg
    assert "unexpected tensors: x_embedder.proj.bias, x_embedder.proj.weight" in msg
    assert "mis-shaped tensors: class_tokens (file (8, 64), model (1, 8, 64))" in msg


@pytest.mark.parametrize("kwargs,match", [
    (dict(guidance_interval=(-0.1, 0.5)), r"0 <= t_min <= t_max <= 1"),
    (dict(guidance_interval=(0.6, 0.4)), r"guidance_interval \(0.6, 0.4\) must satisfy"),
    (dict(guidance_interval=(0.0, 1.01)), r"0 <= t_min <= t_max <= 1"),
    (dict(num_steps=0), "num_steps must be a positive integer"),
    (dict(guidance=-1.0), r"guidance must be >= 0"),
    (dict(noise_scale=2.0), r"unknown option\(s\) noise_scale; this family accepts: guidance_interval, num_steps"),
])
def test_bad_sampling_options_are_input_errors(kwargs, match):
    s = load_sampler("pmf-b16", **TINY)
    with pytest.raises(InputError, match=match):
        s.generate(_noise(), LABELS, **kwargs)


@pytest.mark.parametrize("overrides,match", [
    (dict(noise_scale=0.0), "noise_scale must be a positive number"),
    (dict(noise_scale=-2.0), "noise_scale must be a positive number"),
    (dict(noise_scale=float("nan")), "noise_scale must be a finite number, got nan"),  # the field's type, checked first
    (dict(bottleneck_channels=0), "bottleneck_channels must be a positive integer"),
    (dict(num_heads=32), "divisible by 4"),  # head width 2: no channel pair per axis
    (dict(interval_min=1.2), "must satisfy 0 <= t_min <= t_max <= 1"),
    (dict(num_steps=-1), "num_steps must be a positive integer"),
])
def test_bad_configs_are_input_errors(overrides, match):
    with pytest.raises(InputError, match=match):
        load_sampler("pmf-b16", **{**TINY, **overrides})


def test_docstring_examples_run():
    for module in (adapters.pmf, adapters.pmf.model):
        assert doctest.testmod(module).failed == 0
