"""DMF (adapters/dmf) against the official code (github:kyungmnlee/dmf, never committed: no licence).

The official ``DMFT`` is built with random non-zero weights (every constant its init leaves,
adaLN-Zero gates, zero biases, the zeroed final layer and log-variance head, unit RMSNorm
scales, perturbed), saved as training saves it, loaded through nfebench's checkpoint reader
and sampled by the official ``samplers.euler_sampler`` beside the adapter.

The official ``models/layers.py`` imports its flash-attention JVP wrappers at import time
(``models.flash_attention_{2,3}_jvp``, which import the CUDA kernels and triton); those two
modules are replaced by stubs for the test. Sampling never reaches them: it uses
``attn_func="base"`` (the official naive attention) or ``"torch_sdpa"`` (generate.py's).
"""

from __future__ import annotations

import argparse
import copy
import doctest
import sys
import types
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import adapters.dmf
import adapters.dmf.model
from adapters import get_spec, list_models, load_sampler, model_info
from adapters.api.checkpoint import CheckpointWarning
from adapters.api.errors import InputError
from adapters.dmf.model import reference_key
from adapters.vae import SD_FT_EMA, SD_VAE_DECODER

REPO = ("dmf", "kyungmnlee/dmf")
# A small DMFT (16 tokens of width 64, 3 blocks split 2 | 1). 1000 classes: the official sampler's null label is 1000.
REF_TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=3, num_heads=4, num_classes=1000,
                dmf_depth=2)
TINY = dict(input_size=8, hidden_size=64, depth=3, num_heads=4, dmf_depth=2)
LABELS = torch.tensor([3, 0, 999])
TOL = 1e-4  # relative: max |ours - official| / max |official|, float32
# The official module's parameter counts (pos_embed included, no log-variance head), as issue 20 gives them:
# literal, so that CI without the reference code still checks them.
PARAMS = {"dmf-b2": 130_500_112, "dmf-l2": 458_086_416, "dmf-xl2": 675_111_184, "dmf-xl2-512": 675_999_952}
# id -> (DMFT_models key, generate.py's keyword arguments for it)
REF_SIZES = {
    "dmf-b2": ("DMFT-B/2", dict(input_size=32, dmf_depth=8)),
    "dmf-l2": ("DMFT-L/2", dict(input_size=32, dmf_depth=16)),
    "dmf-xl2": ("DMFT-XL/2", dict(input_size=32, dmf_depth=20)),
    "dmf-xl2-512": ("DMFT-XL/2", dict(input_size=64, dmf_depth=20, qk_norm=True)),
}


def _no_jvp_kernels(*args, **kwargs):
    raise AssertionError("the flash-attention JVP kernels are for training; sampling must not reach them")


@pytest.fixture
def ref(reference_code, monkeypatch):
    """The official `models.dmft` and `samplers` modules, with the JVP attention wrappers stubbed."""
    for name in ("models.flash_attention_2_jvp", "models.flash_attention_3_jvp"):
        stub = types.ModuleType(name)
        stub.flash_attn_func = _no_jvp_kernels
        monkeypatch.setitem(sys.modules, name, stub)
    return reference_code(*REPO, "models.dmft", "samplers")


def reference_net(ref, randomize, seed=0, *, attn="base", logvar=True, **overrides):
    """An official DMFT as generate.py builds it (null class row), with the training-only
    log-variance head unless `logvar` is False, and random non-zero weights."""
    dmft, _ = ref
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = dmft.DMFT(**{**REF_TINY, **overrides}, use_cfg_embedding=True, use_logvar=logvar, attn_func=attn)
    randomize(net, seed + 1)
    with torch.no_grad():  # the init's N(0, 0.02) time MLP and label table barely move the conditioning:
        for p in (net.t_embedder.mlp[0].weight, net.t_embedder.mlp[2].weight, net.y_embedder.embedding_table.weight):
            p.mul_(25.0)  # std 0.5, so that a swapped t and r or a wrong null label shows
    return net.eval()


def noise(n=3, side=8, seed=1):
    return torch.randn(n, 4, side, side, generator=torch.Generator().manual_seed(seed))


def official_sample(ref, net, z, labels, *, guidance=0.0, interval=(0.0, 1.0), num_steps=1, shift=1.0):
    _, samplers = ref
    return samplers.euler_sampler(net, z, labels, num_steps=num_steps, cfg_scale=1.0 + guidance, g_min=interval[0],
                                  g_max=interval[1], shift=shift).to(z.dtype)


def rel_dev(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


# (the official net's extra keyword arguments, our overrides): the plain 256 px layout with the
# official naive attention, and the 512 px one (qk_norm) through torch's SDPA as generate.py runs it.
VARIANTS = {"plain": (dict(attn="base"), {}), "qk_norm": (dict(attn="torch_sdpa", qk_norm=True), dict(qk_norm=True))}


@pytest.fixture(params=sorted(VARIANTS))
def released(request, ref, randomize_constants, tmp_path):
    """(official net, our sampler loaded from its state_dict saved with the log-variance head)."""
    ref_kwargs, overrides = VARIANTS[request.param]
    net = reference_net(ref, randomize_constants, **ref_kwargs)
    path = tmp_path / "dmf_tiny.pt"
    torch.save(net.state_dict(), path)
    with pytest.warns(CheckpointWarning, match=r"ignored 2 tensors \(logvar_linear\.bias, logvar_linear\.weight\): "
                                               r"the training-only log-variance head"):
        s = load_sampler("dmf-b2", path, **TINY, **overrides)
    return net, s


def test_released_state_dict_loads_unchanged(released):
    net, s = released
    theirs = {reference_key(k): v for k, v in net.state_dict().items() if not k.startswith("logvar_linear.")}
    ours = s.net.state_dict()
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
    assert s.info.weights.startswith("sha256:") and "#" not in s.info.weights  # a plain state_dict: no entry


def test_network_is_the_official_forward(released):
    net, s = released
    z, t, r = noise(), torch.tensor([1.0, 0.6, 0.3]), torch.tensor([0.0, 0.5, 0.3])
    with torch.no_grad():
        theirs = net(z, t, r, LABELS)
        assert rel_dev(s.net(z, t, r, LABELS), theirs) <= TOL
        assert rel_dev(net(z, t, t, LABELS), theirs) > 0.05  # r matters: the second time reaches the last blocks
        assert rel_dev(net(z, r, r, LABELS), theirs) > 0.05  # and so does t


# (num_steps, guidance, interval, shift): 1 and 2 steps, with and without CFG, with an interval
# that guides one of two steps, and with a shift, where the interval is read on the shifted t
# (shift 1.5 moves t = 0.5 to 0.6: (0.55, 0.65) guides it, (0.45, 0.55) guides nothing).
CASES = [
    (1, 0.0, (0.0, 1.0), 1.0),
    (2, 0.0, (0.0, 1.0), 1.0),
    (1, 1.5, (0.0, 1.0), 1.0),
    (2, 1.5, (0.0, 1.0), 1.0),
    (2, 1.5, (0.0, 0.7), 1.0),
    (2, 0.0, (0.0, 1.0), 1.5),
    (2, 1.5, (0.55, 0.65), 1.5),
    (2, 1.5, (0.45, 0.55), 1.5),
    (3, 0.6, (0.0, 0.7), 1.5),
]


@pytest.mark.parametrize("num_steps,guidance,interval,shift", CASES)
def test_sampler_matches_official_euler_sampler(ref, released, num_steps, guidance, interval, shift):
    net, s = released
    z = noise()
    options = dict(guidance=guidance, guidance_interval=interval, num_steps=num_steps, shift=shift)
    theirs = official_sample(ref, net, z, LABELS, guidance=guidance, interval=interval, num_steps=num_steps,
                             shift=shift)
    batches = []
    hook = s.net.register_forward_hook(lambda mod, args, out: batches.append(len(args[0])))
    try:
        ours = s.generate(z, LABELS, **options)
    finally:
        hook.remove()
    dev = rel_dev(ours, theirs)
    print(f"dmf qk_norm={s.config.qk_norm} k={num_steps} g={guidance} interval={interval} shift={shift}: "
          f"relative deviation {dev:.2e}")
    assert dev <= TOL
    assert float((theirs - z).abs().max()) > 0.5  # the network moved the sample: the check has teeth
    # One evaluation per image per step, two on a guided step; ModelInfo says the same of these options.
    assert sum(batches) // len(z) == model_info("dmf-b2", **TINY, **options).nfe
    assert len(batches) == num_steps


def test_guidance_interval_is_read_on_the_shifted_times(released):
    _, s = released
    z = noise()
    plain = s.generate(z, LABELS, num_steps=2, shift=1.5)
    assert torch.equal(s.generate(z, LABELS, guidance=1.5, guidance_interval=(0.45, 0.55), num_steps=2, shift=1.5),
                       plain)  # t = 1 and 0.6: neither is in the interval
    assert not torch.equal(s.generate(z, LABELS, guidance=1.5, guidance_interval=(0.45, 0.55), num_steps=2), plain)


def test_unconditional_is_the_null_class(ref, released):
    net, s = released
    z = noise()
    theirs = official_sample(ref, net, z, torch.full((3,), 1000), num_steps=2)
    assert rel_dev(s.generate(z, None, num_steps=2), theirs) <= TOL
    with pytest.raises(InputError, match="guidance 1.0 needs class labels"):
        s.generate(z, None, guidance=1.0)


def test_file_without_the_logvar_head_loads_silently(ref, randomize_constants, tmp_path):
    """generate.py's own layout (use_logvar=False) loads with no warning."""
    path = tmp_path / "dmf_no_logvar.pt"
    net = reference_net(ref, randomize_constants, logvar=False)
    torch.save(net.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        s = load_sampler("dmf-b2", path, **TINY)
    z = noise()
    assert rel_dev(s.generate(z, LABELS, num_steps=2), official_sample(ref, net, z, LABELS, num_steps=2)) <= TOL


def test_everything_but_the_logvar_head_loads_strictly(ref, randomize_constants, tmp_path):
    sd = reference_net(ref, randomize_constants).state_dict()
    path = tmp_path / "no_pos_embed.pt"
    torch.save({k: v for k, v in sd.items() if k != "pos_embed"}, path)
    with pytest.raises(InputError, match=r"missing tensors: pos_embed\."), pytest.warns(CheckpointWarning):
        load_sampler("dmf-b2", path, **TINY)
    path = tmp_path / "extra.pt"
    torch.save({**sd, "logvar_t_embedder.weight": torch.ones(3)}, path)
    with pytest.raises(InputError, match=r"unexpected tensors: logvar_t_embedder\.weight\."), \
            pytest.warns(CheckpointWarning):
        load_sampler("dmf-b2", path, **TINY)
    path = tmp_path / "qk_norm.pt"  # a 512 px file into a model without qk_norm
    torch.save(reference_net(ref, randomize_constants, qk_norm=True).state_dict(), path)
    with pytest.raises(InputError, match=r"unexpected tensors: blocks\.0\.attn\.k_norm\.weight"), \
            pytest.warns(CheckpointWarning):
        load_sampler("dmf-b2", path, **TINY)


def test_train_checkpoint_prefers_ema(ref, randomize_constants, tmp_path):
    """A file as train_dmf.py writes it: {"model", "ema", "opt", "args", "steps"}, EMA differing from the raw weights."""
    model = reference_net(ref, randomize_constants, seed=0)
    ema = copy.deepcopy(model)
    randomize_constants(ema, 7)  # nothing is constant any more: perturb every parameter but pos_embed
    with torch.no_grad():
        for name, p in ema.named_parameters():
            if name != "pos_embed":
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t = torch.rand(3)
    model(noise(), t, t * 0.5, LABELS).square().mean().backward()
    opt.step()  # the optimizer state now holds tensors
    args = argparse.Namespace(model="DMFT-B/2", dmf_depth=2, qk_norm=False, omega=0.6)
    path = tmp_path / "0400000.pt"
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "args": args,
                "steps": 400000}, path)
    with pytest.warns(CheckpointWarning, match="logvar_linear"):
        s = load_sampler("dmf-b2", path, **TINY)
        raw = load_sampler("dmf-b2", path, ema="model", **TINY)
    assert s.info.weights.endswith("#ema") and raw.info.weights.endswith("#model")
    z, options = noise(), dict(guidance=0.6, interval=(0.0, 0.7), num_steps=2)
    ours = s.generate(z, LABELS, guidance=0.6, guidance_interval=(0.0, 0.7), num_steps=2)
    assert rel_dev(ours, official_sample(ref, ema, z, LABELS, **options)) <= TOL
    assert rel_dev(raw.generate(z, LABELS, guidance=0.6, guidance_interval=(0.0, 0.7), num_steps=2),
                   official_sample(ref, model, z, LABELS, **options)) <= TOL
    assert rel_dev(ours, official_sample(ref, model, z, LABELS, **options)) > 0.01  # the EMA is what loaded


@pytest.mark.slow
def test_full_size_dmf_b2_matches_the_official_sampler(ref, randomize_constants, tmp_path):
    """DMFT-B/2 at 256 px as generate.py builds it (dmf_depth 8, torch SDPA), 2 steps, the second guided, shifted."""
    dmft, _ = ref
    with torch.random.fork_rng():
        torch.manual_seed(3)
        net = dmft.DMFT_models["DMFT-B/2"](input_size=32, num_classes=1000, use_cfg_embedding=True, dmf_depth=8,
                                           use_logvar=True, attn_func="torch_sdpa")
    randomize_constants(net, 4)
    path = tmp_path / "dmf_b_2_256.pt"
    torch.save(net.eval().state_dict(), path)
    with pytest.warns(CheckpointWarning, match="logvar_linear"):
        s = load_sampler("dmf-b2", path)
    z, labels = noise(1, side=32, seed=4), torch.tensor([207])
    options = dict(guidance=0.5, interval=(0.0, 0.7), num_steps=2, shift=1.2)
    theirs = official_sample(ref, net, z, labels, **options)
    dev = rel_dev(s.generate(z, labels, guidance=0.5, guidance_interval=(0.0, 0.7), num_steps=2, shift=1.2), theirs)
    print(f"dmf-b2 full size k=2 g=0.5 interval=(0, 0.7) shift=1.2: relative deviation {dev:.2e}")
    assert dev <= TOL
    assert float((theirs - z).abs().max()) > 0.5


@pytest.mark.parametrize("model", sorted(PARAMS))
def test_param_counts_equal_the_issues(model):
    assert model_info(model).params == PARAMS[model]


@pytest.mark.parametrize("model", sorted(REF_SIZES))
def test_param_counts_and_keys_equal_the_official_module(ref, model):
    dmft, _ = ref
    factory, kwargs = REF_SIZES[model]
    with torch.device("meta"):
        theirs = dmft.DMFT_models[factory](num_classes=1000, use_cfg_embedding=True, **kwargs)
    ours = load_sampler(model, device="meta")
    assert ours.info.params == sum(p.numel() for p in theirs.parameters()) == PARAMS[model]
    assert sorted(ours.net.state_dict()) == sorted(reference_key(k) for k in theirs.state_dict())


@pytest.mark.parametrize("model", ["dmf-b2", "dmf-xl2-512"])
def test_gflops_are_the_official_forward(ref, model):
    dmft, _ = ref
    factory, kwargs = REF_SIZES[model]
    side = kwargs["input_size"]
    with torch.device("meta"):  # FlopCounterMode sees the meta kernels of every matmul and attention
        net = dmft.DMFT_models[factory](num_classes=1000, use_cfg_embedding=True, attn_func="torch_sdpa", **kwargs)
        x, t, y = torch.empty(1, 4, side, side), torch.empty(1), torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        net(x, t, t, y)
    assert model_info(model).gflops * 1e9 == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_registered_ids_and_defaults():
    assert {m for m in list_models() if get_spec(m).family == "dmf"} == set(PARAMS)
    for model in PARAMS:
        info, config = model_info(model), get_spec(model).config
        assert (info.nfe, info.sequential_steps, info.num_classes) == (1, 1, 1000)
        assert (config.guidance, config.guidance_interval, config.num_steps) == (0.0, (0.0, 1.0), 1)
        assert get_spec(model).decoder == SD_VAE_DECODER
    assert get_spec("dmf-xl2").config.dmf_depth == get_spec("dmf-xl2-512").config.dmf_depth == 20
    big = model_info("dmf-xl2-512")
    assert (big.sample_shape, big.image_size, get_spec("dmf-xl2-512").config.shift) == ((4, 64, 64), 512, 1.5)
    assert get_spec("dmf-xl2-512").config.qk_norm and not get_spec("dmf-xl2").config.qk_norm


@pytest.mark.parametrize("options,nfe", [
    (dict(num_steps=4), 4),
    (dict(num_steps=4, guidance=1.0), 8),
    (dict(num_steps=4, guidance=1.0, guidance_interval=(0.0, 0.7)), 6),  # t = 0.5 and 0.25 are guided
    (dict(num_steps=2, guidance=1.0, guidance_interval=(0.45, 0.55)), 3),  # t = 0.5 is guided
    (dict(num_steps=2, guidance=1.0, guidance_interval=(0.45, 0.55), shift=1.5), 2),  # shifted to 0.6: not
])
def test_nfe_counts_the_guided_steps(options, nfe):
    assert model_info("dmf-b2", **TINY, **options).nfe == nfe
    assert model_info("dmf-b2", **TINY, **options).sequential_steps == options["num_steps"]


@pytest.fixture
def tiny(make_random_sampler):
    return make_random_sampler("dmf-b2", seed=0, **TINY)


@pytest.mark.parametrize("options,message", [
    (dict(guidance=-0.5), r"guidance must be >= 0 \(the CFG scale is 1 \+ g; 0 means none\), got -0.5"),
    (dict(guidance=float("nan")), "guidance must be a finite number"),
    (dict(guidance_interval=(-0.1, 0.5)), r"guidance_interval \(-0.1, 0.5\) must satisfy 0 <= t_min <= t_max <= 1"),
    (dict(guidance_interval=(0.2, 1.1)), r"guidance_interval \(0.2, 1.1\) must satisfy"),
    (dict(guidance_interval=(0.8, 0.2)), r"guidance_interval \(0.8, 0.2\) must satisfy"),
    (dict(guidance_interval=0.5), "guidance_interval must be a pair"),
    (dict(shift=0.0), r"shift must be a finite number > 0 \(1 = no shift\), got 0.0"),
    (dict(shift=-1.5), "shift must be a finite number > 0"),
    (dict(shift=float("inf")), "shift must be a finite number > 0"),
    (dict(num_steps=0), "num_steps must be a positive integer, got 0"),
    (dict(num_steps=1.5), "num_steps must be a positive integer, got 1.5"),
    (dict(steps=2), "unknown option"),
])
def test_bad_options_are_input_errors(tiny, options, message):
    with pytest.raises(InputError, match=message):
        tiny.generate(noise(), LABELS, **options)


def test_labels_out_of_range_are_input_errors(tiny):
    with pytest.raises(InputError, match=r"labels must lie in \[0, 1000\), got values from 0 to 1000"):
        tiny.generate(noise(), torch.tensor([0, 1, 1000]))  # the null row is not a class to ask for
    with pytest.raises(InputError, match=r"labels must lie in \[0, 1000\), got values from -1"):
        tiny.generate(noise(), torch.tensor([-1, 1, 2]))


@pytest.mark.parametrize("overrides,message", [
    (dict(dmf_depth=4), r"dmf_depth 4 must lie in \[0, depth=3\]"),
    (dict(num_heads=5), "not divisible by num_heads"),
    (dict(guidance=-1.0), "guidance must be >= 0"),
    (dict(guidance_interval=(0.5, 2.0)), "must satisfy 0 <= t_min <= t_max <= 1"),
    (dict(shift=0), "shift must be a finite number > 0"),
    (dict(num_steps=0), "num_steps must be a positive integer"),
    (dict(qk_norm="yes"), "qk_norm must be true or false"),
])
def test_bad_config_is_an_input_error(overrides, message):
    with pytest.raises(InputError, match=message):
        model_info("dmf-b2", **{**TINY, **overrides})


def test_dmf_depth_splits_the_conditioning(tiny):
    """dmf_depth 0 conditions every block on r, dmf_depth = depth every block on t (the final layer stays on r)."""
    net, z = tiny.net, noise()
    t, r = torch.ones(3), torch.zeros(3)
    with torch.no_grad():
        split = net(z, t, r, LABELS)
        net.dmf_depth = 0
        all_r = net(z, t, r, LABELS)
        assert torch.equal(all_r, net(z, r, r, LABELS))  # t is not read at all
        net.dmf_depth = 3
        assert not torch.equal(net(z, t, r, LABELS), split) and not torch.equal(all_r, split)


def test_decodes_with_sd_vae_ft_ema():
    s = load_sampler("dmf-xl2", device="meta")
    assert s.vae_spec == SD_FT_EMA
    assert s.vae_spec.repo == "stabilityai/sd-vae-ft-ema" and s.vae_spec.norm.scale == (0.18215,) * 4


def test_docstring_examples_run():
    assert doctest.testmod(adapters.dmf.model).failed == 0
    assert doctest.testmod(adapters.dmf).failed == 0
