"""SiT adapter (adapters/sit/model.py) against SiT's own code (github:willisma/SiT, never committed).

The reference SiT module is built with random non-zero weights (adaLN-Zero gates and the
final layer perturbed, or the velocity would be zero and every comparison trivial), saved
as SiT saves it, loaded through nfebench's checkpoint reader, and sampled by SiT's transport
ODE sampler (torchdiffeq's fixed-grid euler and heun2) beside the adapter.
"""

from __future__ import annotations

import argparse
import copy
import doctest
import importlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adapters import get_spec, list_models, load_sampler, model_info
from adapters.api.checkpoint import CheckpointWarning
from adapters.api.errors import InputError
from adapters.sit import model as sit_model
from adapters.sit.model import learned_sigma_params

from ..checkpoint_files import save
from ..random_weights import perturb_trained_parameters

# SiT's own factories, at a size that samples in milliseconds: 16 tokens of width 64.
TINY = dict(input_size=8, hidden_size=64, depth=2, num_heads=4, num_classes=10)
REF_TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)
REF_SIZES = {"sit-b2": "SiT-B/2", "sit-l2": "SiT-L/2", "sit-xl2": "SiT-XL/2"}
TOL = 1e-4  # relative: max |ours - SiT's| / max |SiT's|, float32
LABELS = torch.tensor([3, 0, 9])


@pytest.fixture
def ref(reference_code):
    """SiT's `models` and `transport` modules (they import timm and torchdiffeq), or a skip naming what is missing."""
    return reference_code("sit", "willisma/SiT", "models", "transport")


@pytest.fixture
def tiny(make_random_sampler):
    """A tiny SiT of our own with every constant parameter randomised (no reference code needed)."""
    return make_random_sampler("sit-b2", seed=0, **TINY)


def reference_net(ref, seed=0, **overrides):
    models, _ = ref
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = models.SiT(**{**REF_TINY, **overrides})  # learn_sigma=True, class dropout 0.1: as released
    return perturb_trained_parameters(net, seed).eval()


def noise(n=3, seed=1):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def reference_sample(ref, net, z, labels, guidance, num_steps, method):
    """SiT's sample.py ODE path: `num_steps` steps are num_steps + 1 grid points of its sampler;
    guided runs go through forward_with_cfg on the doubled batch [z, z], labels [y, null]."""
    _, transport = ref
    sample_fn = transport.Sampler(transport.create_transport("Linear", "velocity")).sample_ode(
        sampling_method=method, num_steps=num_steps + 1)
    with torch.no_grad():
        if guidance == 0.0:
            return sample_fn(z, net.forward, y=labels)[-1]
        y = torch.cat([labels, torch.full_like(labels, net.y_embedder.num_classes)])
        return sample_fn(torch.cat([z, z]), net.forward_with_cfg, y=y, cfg_scale=1.0 + guidance)[-1][: len(z)]


def rel_dev(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.fixture
def released(ref, tmp_path):
    """(reference SiT, its state_dict file as SiT releases it, our sampler loaded from that file)."""
    net = reference_net(ref)
    path = tmp_path / "SiT-tiny.pt"
    torch.save(net.state_dict(), path)
    with pytest.warns(CheckpointWarning, match=r"dropped the learned-sigma output channels of final_layer.linear "
                                                r"\(weight \(32, 64\) -> \(16, 64\), bias \(32,\) -> \(16,\)\)"):
        s = load_sampler("sit-b2", path, **TINY)
    return net, path, s


def test_released_state_dict_loads_unchanged(released):
    net, _, s = released
    ours, theirs = s.net.state_dict(), net.state_dict()
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        if key.startswith("final_layer.linear."):  # learned sigma dropped: channels c < 4 of each (p, q) group
            expected = theirs[key].reshape(4, 8, *theirs[key].shape[1:])[:, :4].reshape(value.shape)
        else:
            expected = theirs[key]
        assert torch.equal(value, expected), key
    assert s.info.weights.startswith("sha256:") and "#" not in s.info.weights  # a plain state_dict: no entry


def test_network_is_sits_forward(released):
    net, _, s = released
    z, t = noise(), torch.tensor([0.0, 0.37, 1.0])
    with torch.no_grad():
        assert rel_dev(s.net(z, t, LABELS), net(z, t, LABELS)) <= TOL


# 1 and 2 steps, with and without guidance, both solvers; worst deviation is printed for the report.
@pytest.mark.parametrize("solver,method", [("euler", "euler"), ("heun", "heun2")])
@pytest.mark.parametrize("num_steps", [1, 2, 3])
@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_sampler_matches_sits_ode_sampler(ref, released, solver, method, num_steps, guidance):
    import torchdiffeq  # present: the reference's transport imports it

    if method not in importlib.import_module("torchdiffeq._impl.odeint").SOLVERS:
        pytest.skip(f"torchdiffeq {torchdiffeq.__version__} has no fixed-grid {method!r} (SiT's Heun reference)")
    net, _, s = released
    z = noise()
    theirs = reference_sample(ref, net, z, LABELS, guidance, num_steps, method)
    ours = s.generate(z, LABELS, guidance=guidance, num_steps=num_steps, solver=solver)
    dev = rel_dev(ours, theirs)
    print(f"sit {solver} k={num_steps} g={guidance}: relative deviation {dev:.2e}")
    assert dev <= TOL
    assert float((theirs - z).abs().max()) > 0.5  # the network moved the sample: the check has teeth


@pytest.mark.slow
def test_full_size_sit_b2_matches_sits_sampler(ref, tmp_path):
    """SiT-B/2 at 256 px (256 tokens, 1000 classes), guided, one Euler step and one Heun step."""
    models, _ = ref
    with torch.random.fork_rng():
        torch.manual_seed(3)
        net = perturb_trained_parameters(models.SiT_models["SiT-B/2"](), seed=3).eval()
    path = tmp_path / "SiT-B-2.pt"
    torch.save(net.state_dict(), path)
    with pytest.warns(CheckpointWarning, match="learned-sigma"):
        s = load_sampler("sit-b2", path)
    z, labels = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(4)), torch.tensor([207])
    for solver, method in (("euler", "euler"), ("heun", "heun2")):
        theirs = reference_sample(ref, net, z, labels, 3.0, 1, method)  # sample.py's default cfg 4.0
        dev = rel_dev(s.generate(z, labels, guidance=3.0, num_steps=1, solver=solver), theirs)
        print(f"sit-b2 full size {solver} k=1 g=3.0: relative deviation {dev:.2e}")
        assert dev <= TOL
        assert float((theirs - z).abs().max()) > 0.5


def test_guidance_acts_on_three_channels_only(tiny):
    s = tiny
    z = noise()
    # One step, both guided (the same doubled batch): only the scale on channels 0-2 differs.
    diff = s.generate(z, LABELS, guidance=2.0, num_steps=1) - s.generate(z, LABELS, guidance=1.0, num_steps=1)
    assert float(diff[:, :3].abs().max()) > 0.02  # (N, 3, 8, 8): the guided channels move
    assert float(diff[:, 3].abs().max()) == 0.0  # channel 3 keeps the conditional velocity, as forward_with_cfg


def test_unconditional_is_the_null_class(ref, released):
    net, _, s = released
    z = noise()
    theirs = reference_sample(ref, net, z, torch.full((3,), 10), 0.0, 2, "euler")  # SiT's null label, 10
    assert rel_dev(s.generate(z, None, num_steps=2), theirs) <= TOL
    with pytest.raises(InputError, match="guidance 1.0 needs class labels"):
        s.generate(z, None, guidance=1.0)


def train_checkpoint(ref, path):
    """A file shaped as SiT's train.py writes it: raw weights, EMA weights, AdamW state, argparse args."""
    model = reference_net(ref, seed=0)
    ema = perturb_trained_parameters(copy.deepcopy(model), seed=5).eval()  # an EMA that differs from the raw weights
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    model(noise(), torch.rand(3), LABELS).square().mean().backward()
    opt.step()  # the optimizer state now holds tensors (exp_avg, exp_avg_sq, step)
    args = argparse.Namespace(model="SiT-B/2", image_size=64, num_classes=10, path_type="Linear", ckpt=None)
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "args": args}, path)
    return model, ema


def test_train_checkpoint_prefers_ema_as_find_model_does(ref, tmp_path):
    path = tmp_path / "0400000.pt"
    model, ema = train_checkpoint(ref, path)
    z = noise()
    with pytest.warns(CheckpointWarning, match="learned-sigma"):
        s = load_sampler("sit-b2", path, **TINY)
        raw = load_sampler("sit-b2", path, ema="model", **TINY)
    assert s.info.weights.endswith("#ema") and raw.info.weights.endswith("#model")
    assert s.info.weights.split("#")[0] == raw.info.weights.split("#")[0]  # one file, one sha256
    assert rel_dev(s.generate(z, LABELS, guidance=1.0, num_steps=2),
                   reference_sample(ref, ema, z, LABELS, 1.0, 2, "euler")) <= TOL
    assert rel_dev(raw.generate(z, LABELS, guidance=1.0, num_steps=2),
                   reference_sample(ref, model, z, LABELS, 1.0, 2, "euler")) <= TOL
    assert float((s.generate(z, LABELS) - raw.generate(z, LABELS)).abs().max()) > 0.1
    with pytest.raises(InputError, match=r"has no weights entry 'ema_model'; its entries: ema, model"):
        load_sampler("sit-b2", path, ema="ema_model", **TINY)


def test_wrong_size_checkpoint_names_the_tensors(ref, tmp_path):
    path = save(tmp_path, reference_net(ref, depth=3).state_dict(), "SiT-deep.pt")
    with pytest.raises(InputError, match=r"unexpected tensors: blocks\.2\.adaLN_modulation\.1\.bias, .*, "
                                         r"blocks\.2\.mlp\.fc2\.weight\. "), pytest.warns(CheckpointWarning):
        load_sampler("sit-b2", path, **TINY)  # the learned-sigma rows fit this width: dropped, with the warning
    path = save(tmp_path, reference_net(ref, hidden_size=96).state_dict(), "SiT-wide.pt")
    with pytest.raises(InputError, match=r"mis-shaped tensors: blocks\.0\.adaLN_modulation\.1\.bias \(file \(576,\), "
                                         r"model \(384,\)\), .* \(32 in all\)"):
        load_sampler("sit-b2", path, **TINY)
    # a SiT-*/4 into a */2: the learned-sigma rows are left for the check to show
    path = save(tmp_path, reference_net(ref, patch_size=4).state_dict(), "SiT-patch4.pt")
    with pytest.raises(InputError) as err:
        load_sampler("sit-b2", path, **TINY)
    assert ("mis-shaped tensors: final_layer.linear.bias (file (128,), model (16,)), final_layer.linear.weight "
            "(file (128, 64), model (16, 64)), pos_embed (file (1, 4, 64), model (1, 16, 64)), x_embedder.proj.weight "
            "(file (64, 4, 4, 4), model (64, 4, 2, 2))") in str(err.value)
    # built without class dropout: no null row to guide with
    path = save(tmp_path, reference_net(ref, class_dropout_prob=0.0).state_dict(), "SiT-no-null-class.pt")
    with pytest.raises(InputError, match=r"mis-shaped tensors: y_embedder.embedding_table.weight "
                                         r"\(file \(10, 64\), model \(11, 64\)\)"), pytest.warns(CheckpointWarning):
        load_sampler("sit-b2", path, **TINY)


def test_other_familys_checkpoint_names_the_tensors(tmp_path):
    path = save(tmp_path, load_sampler("meanflow-b2", **TINY).net.state_dict(), "meanflow.pt")
    with pytest.raises(InputError, match=r"unexpected tensors: h_embedder.mlp.0.bias"):
        load_sampler("sit-b2", path, **TINY)
    tarflow = load_sampler("tarflow", img_size=8, in_channels=4, patch_size=2, channels=64, num_blocks=1,
                           layers_per_block=1, num_classes=10)
    path = save(tmp_path, tarflow.net.state_dict(), "tarflow.pt")
    with pytest.raises(InputError) as err:
        load_sampler("sit-b2", path, **TINY)
    assert "missing tensors: blocks.0.adaLN_modulation.1.bias" in str(err.value)
    assert "unexpected tensors: blocks.0." in str(err.value)


@pytest.mark.parametrize("model", sorted(REF_SIZES))
def test_param_counts_equal_sits_module(ref, model):
    """Every size on the meta device: ours without learned sigma equals SiT's module built with
    learn_sigma=False, and SiT's released layout has exactly `learned_sigma_params` more."""
    models, _ = ref
    info = model_info(model)
    with torch.device("meta"):
        with_sigma = models.SiT_models[REF_SIZES[model]]()
        without = models.SiT_models[REF_SIZES[model]](learn_sigma=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    config = get_spec(model).config
    print(f"{model}: {info.params} parameters here, {count(with_sigma)} in SiT's module with learned sigma")
    assert info.params == count(without)
    assert count(with_sigma) - info.params == learned_sigma_params(config)
    assert sorted(load_sampler(model, device="meta").net.state_dict()) == sorted(without.state_dict())


@pytest.mark.parametrize("model", sorted(REF_SIZES))
def test_gflops_are_sits_forward(ref, model):
    models, _ = ref
    info = model_info(model)
    with torch.device("meta"):  # FlopCounterMode sees the meta kernels of every matmul and attention
        net = models.SiT_models[REF_SIZES[model]](learn_sigma=False)
        x, t, y = torch.empty(1, 4, 32, 32), torch.empty(1), torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        net(x, t, y)
    assert info.gflops * 1e9 == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_registered_ids_and_nfe():
    assert {m for m in list_models() if get_spec(m).family == "sit"} == set(REF_SIZES)
    assert model_info("sit-xl2").nfe == 1 and model_info("sit-xl2").sequential_steps == 1
    info = model_info("sit-b2", **TINY, num_steps=249, guidance=3.0)  # sample.py ODE --num-sampling-steps 250
    assert (info.nfe, info.sequential_steps) == (498, 249)
    info = model_info("sit-b2", **TINY, num_steps=4, solver="heun", guidance=0.5)
    assert (info.nfe, info.sequential_steps) == (16, 8)  # 2 evaluations per step, doubled by guidance
    assert model_info("sit-b2", **TINY, num_steps=4, solver="heun").nfe == 8


def test_heun_evaluates_twice_per_step_and_doubles_the_batch_with_guidance(tiny):
    s = tiny
    calls = []
    hook = s.net.register_forward_hook(lambda mod, args, out: calls.append((len(args[0]), float(args[1][0]))))
    try:
        s.generate(noise(), LABELS, guidance=0.5, num_steps=2, solver="heun")
    finally:
        hook.remove()
    assert calls == [(6, 0.0), (6, 0.5), (6, 0.5), (6, 1.0)]  # stage 1 at t, stage 2 at t + dt, batch 2N


@pytest.mark.parametrize("options,message", [
    (dict(num_steps=0), "num_steps must be a positive integer, got 0"),
    (dict(num_steps=1.5), "num_steps must be a positive integer, got 1.5"),
    (dict(num_steps=True), "num_steps must be a positive integer, got True"),
    (dict(solver="dopri5"), "unknown solver 'dopri5'; choose one of euler, heun"),
    (dict(guidance=float("inf")), "guidance must be a finite number"),
    (dict(steps=2), "unknown option"),
])
def test_bad_options_are_input_errors(tiny, options, message):
    with pytest.raises(InputError, match=message):
        tiny.generate(noise(), LABELS, **options)


@pytest.mark.parametrize("overrides,message", [
    (dict(num_steps=0), "num_steps must be a positive integer"),
    (dict(solver="rk4"), "unknown solver 'rk4'"),
    (dict(in_channels=2), "in_channels must be at least 3"),
    (dict(num_heads=3), "not divisible by num_heads"),
])
def test_bad_config_is_an_input_error(overrides, message):
    with pytest.raises(InputError, match=message):
        model_info("sit-b2", **{**TINY, **overrides})


def test_decodes_with_sd_vae_ft_mse():
    s = load_sampler("sit-b2", device="meta", **TINY)
    assert s.vae_spec.repo == "stabilityai/sd-vae-ft-mse" and s.vae_spec.norm.scale == (0.18215,) * 4


def test_docstring_examples_run():
    assert doctest.testmod(sit_model).failed == 0
