"""FACM adapter (adapters/facm) against FACM's own code (github:ali-vilab/FACM, never committed).

The reference LightningDiT is built as test.py builds it (``create_models_from_config`` from
``ldit/lightningdit.yaml``), shrunk in width and depth for speed, given random non-zero weights,
saved in each released layout (a training checkpoint as utils.py ``save_ckpt`` writes it, with a
PostHocEMA of two averages, and the file utils/extract_ema.py makes of it), loaded through
nfebench's checkpoint reader, and sampled by sampler.py's ``consistency_model_sampler`` itself,
its ``torch.randn_like`` draws replaced by the given step noise.
"""

from __future__ import annotations

import argparse
import copy
import doctest
import warnings

import pytest
import torch

import adapters.facm
from adapters import get_spec, list_models, load_sampler, model_info
from adapters.api.checkpoint import CheckpointWarning
from adapters.api.errors import InputError
from adapters.base import derive_step_noise
from adapters.facm import model as facm_model
from adapters.facm.model import STEP_NOISE_TAG, nfe
from adapters.facm.network import ROPE_KEYS, released_key
from adapters.facm.vavae import VA_VAE_DECODER
from adapters.soflow.model import STEP_NOISE_TAG as SOFLOW_TAG

TINY = dict(hidden_size=64, depth=2, num_heads=4)  # the `reference_dit` fixture's default sizes (1000 classes)
TOL = 1e-4  # relative: max |ours - FACM's| / max |FACM's|, float32 network (the reference steps in float64)
SHAPE = (32, 16, 16)
LABELS = torch.tensor([3, 0, 9])


def noise(n=3, seed=1):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def step_noise(num_steps, n=3, seed=2):
    return torch.randn(n, num_steps - 1, *SHAPE, generator=torch.Generator().manual_seed(seed))


def rel_dev(ours, theirs):
    return float((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max())


def reference_sample(ref, model, z, labels, num_steps, eps, cfg_scale=1.0, interval=(0.125, 1.0)):
    """sampler.py's consistency_model_sampler, each ``torch.randn_like`` replaced by the next of
    ``eps[:, i]`` (N, k - 1, C, H, W); its last step's draw, which it discards, is zeros."""
    draws = [*eps.unbind(1), torch.zeros_like(z)]
    real = torch.randn_like
    torch.randn_like = lambda x: draws.pop(0).to(x.dtype)
    try:
        out = ref.sampler.consistency_model_sampler(model, z, labels, num_steps=num_steps, cfg_scale=cfg_scale,
                                                    guidance_low=interval[0], guidance_high=interval[1])
    finally:
        torch.randn_like = real
    assert not draws  # one draw per step, as the reference makes them
    return out


def posthoc_ema_state(averages):
    """A PostHocEMA(model, sigma_rels=(0.05, 0.20)) state_dict (ema_pytorch 0.8's layout): per average
    its ``initted`` and ``step`` counters and ``ema_model.*``, the model's state_dict."""
    sd = {}
    for i, net in enumerate(averages):
        sd[f"ema_models.{i}.initted"] = torch.tensor(True)
        sd[f"ema_models.{i}.step"] = torch.tensor(25000)
        sd.update({f"ema_models.{i}.ema_model.{k}": v for k, v in net.state_dict().items()})
    return sd


def save_training_checkpoint(reference_dit, path):
    """A file as utils.py ``save_ckpt`` writes it: raw weights, the PostHocEMA state (two averages
    that differ from them and from each other), AdamW state after one step, args, epoch and step."""
    model = reference_dit(seed=0)
    ema0, ema1 = copy.deepcopy(model), reference_dit(seed=5)
    for p, q in zip(ema0.parameters(), model.parameters()):
        p.data = q.data + 0.05  # the sigma_rel 0.05 average, near the raw weights
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(noise(), torch.rand(3), torch.ones(3), y=LABELS).square().mean().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "emas": posthoc_ema_state([ema0, ema1]), "opt": opt.state_dict(),
                "args": argparse.Namespace(model="LightningDiT-XL/1", cfgw=1.75), "epoch": 5, "step": 25000}, path)
    return model, ema0, ema1


@pytest.fixture
def released(reference_dit, extract_ema, tmp_path):
    """(raw, ema0, ema1 references, the training checkpoint, the file extract_ema.py makes of it)."""
    train = tmp_path / "0025000.pt"
    model, ema0, ema1 = save_training_checkpoint(reference_dit, train)
    extracted = tmp_path / "400ep-stg2.pt"
    extract_ema(str(train), str(extracted))
    return model, ema0, ema1, train, extracted


def assert_holds(sampler, reference):
    ours = sampler.net.state_dict()
    theirs = {released_key(k): v for k, v in reference.state_dict().items() if k not in ROPE_KEYS}
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


def test_extracted_release_loads_its_ema_strictly(released):
    """The released layout, ``{"ema": sd, "_extracted_from": "PostHocEMA"}`` with the rope buffers."""
    model, _, ema1, _, extracted = released
    sd = torch.load(extracted)
    assert set(sd) == {"ema", "_extracted_from"} and set(ROPE_KEYS) <= set(sd["ema"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)  # nothing in a released file is ignored
        s = load_sampler("facm-xl1", extracted, **TINY)
    assert s.info.weights.startswith("sha256:") and s.info.weights.endswith("#ema")
    assert_holds(s, ema1)
    assert not torch.equal(ema1.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)  # EMA is not raw


def test_training_checkpoint_loads_posthoc_ema_1(released):
    """``emas``'s ``ema_models.1`` (sigma_rel 0.2, test.py's ``emas.ema_models[1]``), not the raw weights
    nor the other average; what is left out is named."""
    model, ema0, ema1, train, _ = released
    with pytest.warns(CheckpointWarning, match=r"loaded PostHocEMA's ema_models.1 .* ignored \d+ tensors "
                                               r"\(the sigma_rel 0.05 average ema_models.0"):
        s = load_sampler("facm-xl1", train, **TINY)
    assert s.info.weights.endswith("#emas")
    assert_holds(s, ema1)
    for other in (model, ema0):
        assert not torch.equal(other.final_layer.linear.weight, ema1.final_layer.linear.weight)


def test_raw_weights_on_request(released):
    model, _, _, train, _ = released
    s = load_sampler("facm-xl1", train, ema="model", **TINY)
    assert s.info.weights.endswith("#model")
    assert_holds(s, model)


def test_posthoc_ema_without_the_second_average_is_refused(reference_dit, tmp_path):
    path = tmp_path / "one-average.pt"
    torch.save({"emas": posthoc_ema_state([reference_dit()])}, path)
    with pytest.raises(InputError, match=r"has no ema_models.1.ema_model.\* \(the sigma_rel 0.2 average"):
        load_sampler("facm-xl1", path, **TINY)


def test_posthoc_layout_is_ema_pytorchs(reference_dit, tmp_path):
    """The hand-written PostHocEMA layout is ema_pytorch's own (test.py's construction), where it is installed."""
    ema_pytorch = pytest.importorskip("ema_pytorch")
    net = reference_dit()
    emas = ema_pytorch.PostHocEMA(net, sigma_rels=(0.05, 0.20), checkpoint_folder=str(tmp_path / "ema_checkpoints"))
    ours = posthoc_ema_state([net, net])
    assert {k: tuple(v.shape) for k, v in emas.state_dict().items()} == {k: tuple(v.shape) for k, v in ours.items()}


@pytest.fixture
def facm(released):
    """(the EMA reference, our sampler from the released file)."""
    _, _, ema1, _, extracted = released
    return ema1, load_sampler("facm-xl1", extracted, **TINY)


@pytest.mark.parametrize("num_steps", [1, 2, 3])
def test_sampler_matches_consistency_model_sampler(ref, facm, num_steps):
    ema, s = facm
    z, eps = noise(), step_noise(num_steps)
    theirs = reference_sample(ref, ema, z, LABELS, num_steps, eps)
    dev = rel_dev(s.generate(z, LABELS, num_steps=num_steps, step_noise=eps), theirs)
    print(f"facm k={num_steps}: relative deviation {dev:.2e}")
    assert dev <= TOL
    assert float((theirs - z).abs().max()) > 0.5  # the network moved the sample
    if num_steps > 1:  # and the re-noising draws matter
        assert rel_dev(reference_sample(ref, ema, z, LABELS, num_steps, step_noise(num_steps, seed=9)), theirs) > 0.05


@pytest.mark.parametrize("num_steps,interval", [(1, (0.0, 1.0)), (2, (0.125, 1.0)), (2, (0.0, 1.0)), (3, (0.3, 0.5))])
def test_guided_sampler_matches_consistency_model_sampler(ref, facm, num_steps, interval):
    """CFG at scale 1 + g on all channels, on the steps whose t_i lies in the interval (at one step t_0 = 0
    is guided only by an interval reaching 0; at two steps the default guides t_1 = 0.5 alone)."""
    ema, s = facm
    z, eps, g = noise(), step_noise(num_steps), 0.75
    theirs = reference_sample(ref, ema, z, LABELS, num_steps, eps, cfg_scale=1.0 + g, interval=interval)
    ours = s.generate(z, LABELS, guidance=g, guidance_interval=interval, num_steps=num_steps, step_noise=eps)
    dev = rel_dev(ours, theirs)
    print(f"facm k={num_steps} guided on {interval}: relative deviation {dev:.2e}")
    assert dev <= TOL
    assert rel_dev(reference_sample(ref, ema, z, LABELS, num_steps, eps), theirs) > 0.01  # guidance changed it


def test_default_interval_leaves_one_step_unguided(facm):
    """t_0 = 0 lies below 0.125: one guided step is the unguided one, as the reference samples it."""
    _, s = facm
    z = noise()
    assert torch.equal(s.generate(z, LABELS, guidance=0.75), s.generate(z, LABELS))


def test_guided_steps_cost_two_evaluations(make_random_sampler):
    s = make_random_sampler("facm-xl1", **TINY)
    calls = []
    hook = s.net.register_forward_hook(lambda mod, args, out: calls.append((len(args[0]), args[1][0].item())))
    try:
        s.generate(noise(), LABELS, guidance=0.5, num_steps=4)  # t = 0, 0.25, 0.5, 0.75: three in [0.125, 1]
    finally:
        hook.remove()
    assert calls == [(3, 0.0), (6, 0.25), (6, 0.5), (6, 0.75)]  # one doubled batch per guided step
    assert nfe(4, 0.5, (0.125, 1.0)) == 7 == model_info("facm-xl1", **TINY, num_steps=4, guidance=0.5).nfe
    assert model_info("facm-xl1", guidance=0.5).nfe == 1  # the one step at t = 0 is not guided
    assert model_info("facm-xl1", num_steps=2, guidance=0.5).nfe == 3
    assert model_info("facm-xl1", num_steps=2, guidance=0.5, guidance_interval=(0.0, 1.0)).nfe == 4
    assert model_info("facm-xl1", num_steps=2).sequential_steps == 2


def test_derived_step_noise_is_each_samples_own(facm):
    """Without step_noise each sample's draws come from its own noise (FACM's stream, not SoFlow's)."""
    _, s = facm
    z = noise(n=4)
    labels = torch.tensor([1, 5, 7, 0])
    eps = derive_step_noise(z, 3, tag=STEP_NOISE_TAG)
    batched = s.generate(z, labels, num_steps=3)
    assert torch.equal(batched, s.generate(z, labels, num_steps=3, step_noise=eps))
    for i in range(4):
        assert torch.allclose(s.generate(z[i:i + 1], labels[i:i + 1], num_steps=3)[0], batched[i], atol=1e-5)
    order = torch.tensor([3, 1, 0, 2])
    assert torch.allclose(s.generate(z[order], labels[order], num_steps=3), batched[order], atol=1e-5)
    assert not torch.equal(eps, derive_step_noise(z, 3, tag=SOFLOW_TAG))


def test_unconditional_is_the_null_row(ref, facm):
    """Labels None sample the null class, row 1000, as the reference does given y = 1000."""
    ema, s = facm
    z, eps = noise(), step_noise(2)
    theirs = reference_sample(ref, ema, z, torch.full((3,), 1000), 2, eps)
    assert rel_dev(s.generate(z, None, num_steps=2, step_noise=eps), theirs) <= TOL
    assert rel_dev(s.generate(z, LABELS, num_steps=2, step_noise=eps), theirs) > 0.01


@pytest.mark.slow
def test_full_size_facm_xl1_matches_consistency_model_sampler(ref, reference_dit, tmp_path):
    """LightningDiT-XL/1 at full size from a file in the released layout: 1 step, and
    2 steps guided on the default interval."""
    ema = reference_dit(seed=3, shrink=None)
    path = tmp_path / "400ep-stg2.pt"
    torch.save({"ema": ema.state_dict(), "_extracted_from": "PostHocEMA"}, path)
    s = load_sampler("facm-xl1", path)
    z = noise(n=1, seed=4)  # one sample per case: a full-size forward costs seconds here
    for k, g, labels in ((1, 0.0, torch.tensor([207])), (2, 0.75, torch.tensor([999]))):
        eps = step_noise(k, n=1, seed=5)
        theirs = reference_sample(ref, ema, z, labels, k, eps, cfg_scale=1.0 + g)
        dev = rel_dev(s.generate(z, labels, guidance=g, num_steps=k, step_noise=eps), theirs)
        print(f"facm-xl1 full size k={k} g={g}: relative deviation {dev:.2e}")
        assert dev <= TOL
        assert float((theirs - z).abs().max()) > 0.5


def test_registered_id_and_decoder():
    assert {m for m in list_models() if get_spec(m).family == "facm"} == {"facm-xl1"}
    info = model_info("facm-xl1")
    assert (info.nfe, info.sequential_steps, info.sample_shape, info.image_size, info.num_classes) == \
        (1, 1, (32, 16, 16), 256, 1000)
    assert get_spec("facm-xl1").decoder == VA_VAE_DECODER
    assert model_info("facm-xl1", input_size=32).image_size == 512  # the VA-VAE upsamples 16x


@pytest.fixture
def tiny(make_random_sampler):
    return make_random_sampler("facm-xl1", **TINY)


def test_guidance_zero_is_the_default(tiny):
    z = noise()
    assert torch.equal(tiny.generate(z, LABELS, guidance=0), tiny.generate(z, LABELS))


@pytest.mark.parametrize("options,message", [
    (dict(num_steps=2, step_noise=step_noise(3)),
     r"step_noise has shape \(3, 2, 32, 16, 16\), expected \(3, 1, 32, 16, 16\)"),
    (dict(num_steps=2, step_noise=noise()), r"step_noise has shape \(3, 32, 16, 16\), expected \(3, 1, 32, 16, 16\)"),
    (dict(num_steps=2, step_noise=step_noise(2, n=4)), r"step_noise has shape \(4, 1, 32, 16, 16\)"),
    (dict(step_noise=step_noise(2)), r"step_noise has shape \(3, 1, 32, 16, 16\), expected \(3, 0, 32, 16, 16\)"),
    (dict(num_steps=2, step_noise=torch.zeros(3, 1, 4, 32, 32)), r"expected \(3, 1, 32, 16, 16\)"),
    (dict(num_steps=2, step_noise=torch.zeros(3, 1, *SHAPE, dtype=torch.long)), r"floating-point tensor"),
    (dict(guidance=-0.5), r"guidance must be >= 0 \(FACM's sampler guides only at scale 1 \+ g > 1\), got -0.5"),
    (dict(guidance=float("nan")), r"guidance must be a finite number"),
    (dict(guidance_interval=(0.5, 0.2)), r"guidance_interval \(0.5, 0.2\) must satisfy 0 <= t_min <= t_max <= 1"),
    (dict(guidance_interval=0.5), r"guidance_interval must be a pair"),
    (dict(num_steps=0), r"num_steps must be a positive integer, got 0"),
    (dict(steps=2), r"unknown option"),
])
def test_bad_options_are_input_errors(tiny, options, message):
    with pytest.raises(InputError, match=message):
        tiny.generate(noise(), LABELS, **options)


def test_guidance_needs_labels(tiny):
    with pytest.raises(InputError, match=r"guidance 0.5 needs class labels"):
        tiny.generate(noise(), None, guidance=0.5)


@pytest.mark.parametrize("overrides,message", [
    (dict(guidance=-1.0), r"guidance must be >= 0"),
    (dict(guidance_interval=(0.2, 1.5)), r"must satisfy 0 <= t_min <= t_max <= 1"),
    (dict(num_steps=0), r"num_steps must be a positive integer"),
])
def test_bad_config_is_an_input_error(overrides, message):
    with pytest.raises(InputError, match=message):
        model_info("facm-xl1", **{**TINY, **overrides})


def test_docstring_examples_run():
    assert doctest.testmod(facm_model).failed == 0
    assert doctest.testmod(adapters.facm).failed == 0
