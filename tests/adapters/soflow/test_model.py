"""SoFlow adapter (adapters/soflow) against SoFlow's own code (github:zlab-princeton/SoFlow, never committed).

The reference ``models.Soflow`` is built as inference.py builds it (cfg_drop_rate 0.1, Linear
noising, Euler coefficients, ``dit.DiT(mlp_ratio=4, learn_sigma=False)`` through models.py),
shrunk in width and depth for speed, given random non-zero weights (adaLN-Zero gates and the
output layer randomised, or F would be zero and every comparison trivial), saved as train.py
saves it, loaded through nfebench's checkpoint reader, and sampled by inference.py's loop
(transcribed in `reference_sample`, with the re-noising draws given instead of randn_like).
"""

from __future__ import annotations

import copy
import doctest

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import adapters.soflow
from adapters import get_spec, list_models, load_sampler, model_info
from adapters.api.errors import InputError
from adapters.soflow import model as soflow_model
from adapters.soflow.model import derive_step_noise, released_key
from adapters.vae import SD_FT_MSE, SD_VAE_DECODER

from ..checkpoint_files import save

TINY = dict(input_size=8, hidden_size=64, depth=2, num_heads=4, num_classes=10)
SHRINK = dict(hidden_size=64, depth=2, num_heads=4)  # what the tiny reference overrides of models.py's DiT(...)
TOL = 1e-4  # relative: max |ours - SoFlow's| / max |SoFlow's|, float32
LABELS = torch.tensor([3, 0, 9])
# The reference's model_type of each id, and the parameter counts of issue 20 (official module, pos_embed included).
MODEL_TYPES = {"soflow-b4": "DiT-B-4", "soflow-b2": "DiT-B-2", "soflow-m2": "DiT-M-2", "soflow-l2": "DiT-L-2",
               "soflow-xl2": "DiT-XL-2"}
PARAMS = {"soflow-b4": 131_214_400, "soflow-b2": 131_288_080, "soflow-m2": 308_281_360, "soflow-l2": 459_399_184,
          "soflow-xl2": 676_735_504}


@pytest.fixture
def ref(reference_code):
    """SoFlow's `models` and `dit` modules (they import timm), or a skip naming what is missing."""
    return reference_code("soflow", "zlab-princeton/SoFlow", "models", "dit")


def reference_soflow(ref, randomize, *, seed=0, model_type="DiT-B-2", data_size=8, num_classes=10,
                     cfg_drop_rate=0.1, shrink=SHRINK):
    """``models.Soflow`` as inference.py:47-48 builds it, its DiT made `shrink`-sized (None: full
    size) by wrapping the ``DiT`` that models.py calls, keeping every other argument models.py passes."""
    models, dit = ref
    full = models.DiT
    models.DiT = full if shrink is None else (lambda **kwargs: dit.DiT(**{**kwargs, **shrink}))
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = models.Soflow(data_channels=4, data_size=data_size, num_classes=num_classes,
                                cfg_drop_rate=cfg_drop_rate, noising_type="Linear", coefficient_type="Euler",
                                model_type=model_type)
    finally:
        models.DiT = full
    randomize(net, seed)
    return net.eval()


def reference_sample(soflow, z, labels, num_steps, step_noise):
    """inference.py:61-88 for one batch, ``torch.randn_like(x_t)`` replaced by the given
    ``step_noise[:, i]``: (N, k - 1, C, H, W)."""
    eval_time = [1.0 - i / num_steps for i in range(num_steps + 1)]
    t_ones = torch.ones((z.shape[0],))
    x_t = z
    with torch.inference_mode():
        for i in range(len(eval_time) - 2):
            x_t = soflow.solution_operator(x_t, eval_time[i] * t_ones, 0 * t_ones, labels)
            next_start = eval_time[i + 1] * t_ones
            alpha_next = soflow.scheduler.alpha(next_start).view(-1, 1, 1, 1)
            beta_next = soflow.scheduler.beta(next_start).view(-1, 1, 1, 1)
            x_t = alpha_next * x_t + beta_next * step_noise[:, i]
        return soflow.solution_operator(x_t, eval_time[-2] * t_ones, eval_time[-1] * t_ones, labels)


def noise(n=3, seed=1, shape=(4, 8, 8)):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def step_noise(num_steps, n=3, seed=2, shape=(4, 8, 8)):
    return torch.randn(n, num_steps - 1, *shape, generator=torch.Generator().manual_seed(seed))


def rel_dev(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


def save_training_checkpoint(ref, randomize, path):
    """A file as train.py:371-377 writes it: the wrapper's raw and EMA state_dicts (keys network.*),
    the AdamW state over ``network.parameters()`` after one step, and the step and epoch counters."""
    model = reference_soflow(ref, randomize, seed=0)
    ema = copy.deepcopy(model)
    randomize(ema, 5)  # an EMA that differs from the raw weights
    opt = torch.optim.AdamW(model.network.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    model.solution_operator(noise(), torch.rand(3), torch.zeros(3), LABELS).square().mean().backward()
    opt.step()  # the optimizer state now holds tensors (exp_avg, exp_avg_sq, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "ema_model": ema.state_dict(), "optimizer": opt.state_dict(),
                "finished_steps": 25000, "finished_epochs": 5}, path)
    return model, ema


@pytest.fixture
def released(ref, randomize, tmp_path):
    """(raw reference, EMA reference, the checkpoint file, our sampler loaded from it)."""
    path = tmp_path / "B-2-cond" / "ckpts" / "25000.pt"
    model, ema = save_training_checkpoint(ref, randomize, path)
    return model, ema, path, load_sampler("soflow-b2", path, **TINY)


def test_training_checkpoint_loads_its_ema_model_entry_strictly(released):
    model, ema, _, s = released
    assert s.info.weights.startswith("sha256:") and s.info.weights.endswith("#ema_model")
    ours, theirs = s.net.state_dict(), ema.state_dict()
    assert sorted(ours) == sorted(released_key(k) for k in theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[released_key(key)], value), key
    assert not torch.equal(ema.state_dict()["network.blocks.0.attn.qkv.weight"],
                           model.state_dict()["network.blocks.0.attn.qkv.weight"])  # the EMA is not the raw weights


def test_raw_weights_on_request_and_they_differ(released):
    model, _, path, s = released
    raw = load_sampler("soflow-b2", path, ema="model", **TINY)
    assert raw.info.weights == s.info.weights.replace("#ema_model", "#model")
    z = noise()
    assert rel_dev(raw.generate(z, LABELS), reference_sample(model, z, LABELS, 1, step_noise(1))) <= TOL
    assert float((raw.generate(z, LABELS) - s.generate(z, LABELS)).abs().max()) > 0.1


def test_network_is_soflows_dit_forward(released):
    """The network alone at s != 0, where t and t - s differ: a swap of t_embedder and
    s_embedder, or s embedded instead of t - s, would show here (the sampler only uses s = 0)."""
    _, ema, _, s = released
    z, t, r = noise(), torch.tensor([1.0, 0.7, 0.31]), torch.tensor([0.0, 0.2, 0.3])
    with torch.no_grad():
        theirs = ema.network(z, t, r, LABELS)
        assert rel_dev(s.net(z, t, LABELS, t - r), theirs) <= TOL
        assert rel_dev(s.net(z, t, LABELS, r), theirs) > 0.05  # the interval, not s, matters: the check has teeth
        assert rel_dev(s.net(z, t - r, LABELS, t), theirs) > 0.05


@pytest.mark.parametrize("num_steps", [1, 2, 3])
def test_sampler_matches_inference_loop(released, num_steps):
    _, ema, _, s = released
    z, eps = noise(), step_noise(num_steps)
    theirs = reference_sample(ema, z, LABELS, num_steps, eps)
    dev = rel_dev(s.generate(z, LABELS, num_steps=num_steps, step_noise=eps), theirs)
    print(f"soflow k={num_steps}: relative deviation {dev:.2e}")
    assert dev <= TOL
    assert float((theirs - z).abs().max()) > 0.5  # the network moved the sample
    if num_steps > 1:  # and the re-noising draws matter
        other = reference_sample(ema, z, LABELS, num_steps, step_noise(num_steps, seed=9))
        assert rel_dev(other, theirs) > 0.05


def test_unconditional_is_the_null_row(released):
    _, ema, _, s = released
    z, eps = noise(), step_noise(2)
    theirs = reference_sample(ema, z, None, 2, eps)  # dit.DiT.forward: y None -> label 10, the null row
    assert rel_dev(s.generate(z, None, num_steps=2, step_noise=eps), theirs) <= TOL
    assert rel_dev(s.generate(z, LABELS, num_steps=2, step_noise=eps), theirs) > 0.05


def test_patch_4_matches_inference_loop(ref, randomize, tmp_path):
    """B/4's patch size through models.py's DiT-B-4 branch (4 tokens of 4x4 patches at latent side 8)."""
    ema = reference_soflow(ref, randomize, model_type="DiT-B-4")
    path = tmp_path / "25000.pt"
    torch.save({"model": ema.state_dict(), "ema_model": ema.state_dict()}, path)
    s = load_sampler("soflow-b4", path, **TINY)
    z, eps = noise(), step_noise(2)
    assert rel_dev(s.generate(z, LABELS, num_steps=2, step_noise=eps), reference_sample(ema, z, LABELS, 2, eps)) <= TOL


@pytest.mark.slow
def test_full_size_soflow_b2_matches_inference_loop(ref, randomize, tmp_path):
    """SoFlow-B/2 at 256 px (256 tokens, 1000 classes), 1 and 2 steps, from a file in the released layout."""
    ema = reference_soflow(ref, randomize, seed=3, data_size=32, num_classes=1000, shrink=None)
    path = tmp_path / "B-2-cond" / "ckpts" / "400000.pt"
    path.parent.mkdir(parents=True)
    torch.save({"ema_model": ema.state_dict(), "finished_steps": 400000, "finished_epochs": 240}, path)
    s = load_sampler("soflow-b2", path)
    z, labels = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(4)), torch.tensor([207, 999])
    for k in (1, 2):
        eps = torch.randn(2, k - 1, 4, 32, 32, generator=torch.Generator().manual_seed(5))
        theirs = reference_sample(ema, z, labels, k, eps)
        dev = rel_dev(s.generate(z, labels, num_steps=k, step_noise=eps), theirs)
        print(f"soflow-b2 full size k={k}: relative deviation {dev:.2e}")
        assert dev <= TOL
        assert float((theirs - z).abs().max()) > 0.5


def test_each_step_evaluates_once_at_t_with_interval_t(make_random_sampler):
    s = make_random_sampler("soflow-b2", **TINY)
    calls = []
    hook = s.net.register_forward_hook(lambda mod, args, out: calls.append(
        (len(args[0]), args[1].tolist(), args[3].tolist())))
    try:
        s.generate(noise(), LABELS, num_steps=3)
    finally:
        hook.remove()
    thirds = [1.0, 1 - 1 / 3, 1 - 2 / 3]  # t_i = 1 - i/k, as float32
    assert calls == [(3, [torch.tensor(t).item()] * 3, [torch.tensor(t).item()] * 3) for t in thirds]


def test_derived_step_noise_is_each_samples_own(make_random_sampler):
    """Derived draws depend on the sample's noise alone: not on batch size, position or neighbours."""
    z = noise(n=5)
    eps = derive_step_noise(z, 3)  # (5, 2, 4, 8, 8)
    assert eps.shape == (5, 2, 4, 8, 8)
    for i in range(5):
        assert torch.equal(derive_step_noise(z[i:i + 1], 3)[0], eps[i])
    order = torch.tensor([4, 2, 0, 3, 1])
    assert torch.equal(derive_step_noise(z[order], 3), eps[order])
    changed = z.clone()
    changed[0] += 1.0
    moved = derive_step_noise(changed, 3)
    assert torch.equal(moved[1:], eps[1:]) and not torch.equal(moved[0], eps[0])
    assert torch.equal(derive_step_noise(z, 2), eps[:, :1])  # k = 2's draw is k = 3's first
    assert torch.equal(derive_step_noise(z.bfloat16(), 3), eps)  # a bfloat16 run draws the same
    assert derive_step_noise(z, 1).shape == (5, 0, 4, 8, 8)

    s = make_random_sampler("soflow-b2", **TINY)
    labels = torch.tensor([1, 5, 7, 0, 3])
    batched = s.generate(z, labels, num_steps=3)
    assert torch.equal(batched, s.generate(z, labels, num_steps=3, step_noise=eps))  # generate uses exactly these
    for i in range(5):
        assert torch.allclose(s.generate(z[i:i + 1], labels[i:i + 1], num_steps=3)[0], batched[i], atol=1e-5)
    assert torch.allclose(s.generate(z[order], labels[order], num_steps=3), batched[order], atol=1e-5)


def test_derived_step_noise_is_standard_normal_and_not_the_noise():
    z = noise(n=8, shape=(4, 32, 32))
    eps = derive_step_noise(z, 3)  # (8, 2, 4, 32, 32): 65,536 draws per step
    for step in range(2):
        draws = eps[:, step]
        assert abs(float(draws.mean())) < 0.02 and abs(float(draws.std()) - 1.0) < 0.02
        assert abs(float(torch.corrcoef(torch.stack([draws.flatten(), z.flatten()]))[0, 1])) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([eps[:, 0].flatten(), eps[:, 1].flatten()]))[0, 1])) < 0.02
    assert len({float(row[0, 0, 0, 0]) for row in eps}) == 8  # every sample its own stream


@pytest.mark.parametrize("model", sorted(MODEL_TYPES))
def test_param_counts_and_keys_equal_soflows_module(ref, model):
    """Every size on the meta device, built as inference.py builds it, against issue 20's counts."""
    models, _ = ref
    with torch.device("meta"):
        theirs = models.Soflow(data_channels=4, data_size=32, num_classes=1000, cfg_drop_rate=0.1,
                               noising_type="Linear", coefficient_type="Euler", model_type=MODEL_TYPES[model])
    count = sum(p.numel() for p in theirs.parameters())
    print(f"{model}: {model_info(model).params} parameters here, {count} in SoFlow's module")
    assert model_info(model).params == count == PARAMS[model]
    ours = load_sampler(model, device="meta").net.state_dict()
    assert sorted(ours) == sorted(released_key(k) for k in theirs.state_dict())
    assert all(tuple(ours[released_key(k)].shape) == tuple(v.shape) for k, v in theirs.state_dict().items())


@pytest.mark.parametrize("model", sorted(MODEL_TYPES))
def test_gflops_are_soflows_forward(ref, model):
    models, _ = ref
    with torch.device("meta"):
        net = models.Soflow(data_channels=4, data_size=32, num_classes=1000, model_type=MODEL_TYPES[model]).network
        x, t = torch.empty(1, 4, 32, 32), torch.empty(1)
        with FlopCounterMode(display=False) as counter:
            net(x, t, t, torch.zeros(1, dtype=torch.long))
    assert model_info(model).gflops * 1e9 == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_uncond_checkpoint_names_its_label_table(ref, randomize, tmp_path):
    """B/4 "uncond" (cfg_drop_rate 0: no null row) is not registered; its file is refused by name."""
    uncond = reference_soflow(ref, randomize, model_type="DiT-B-4", cfg_drop_rate=0.0)
    path = save(tmp_path, {"ema_model": uncond.state_dict()}, "uncond.pt")
    with pytest.raises(InputError, match=r"mis-shaped tensors: y_embedder.embedding_table.weight "
                                         r"\(file \(10, 64\), model \(11, 64\)\)"):
        load_sampler("soflow-b4", path, **TINY)


def test_wrong_size_checkpoint_names_the_tensors(ref, randomize, tmp_path):
    path = save(tmp_path, {"ema_model": reference_soflow(ref, randomize, model_type="DiT-B-4").state_dict()}, "B-4.pt")
    with pytest.raises(InputError, match=r"mis-shaped tensors: final_layer.linear.bias "
                                         r"\(file \(64,\), model \(16,\)\)"):
        load_sampler("soflow-b2", path, **TINY)


def test_other_familys_checkpoint_names_the_tensors(tmp_path):
    path = save(tmp_path, load_sampler("sit-b2", **TINY).net.state_dict(), "sit.pt")
    with pytest.raises(InputError, match=r"missing tensors: h_embedder.mlp.0.bias"):
        load_sampler("soflow-b2", path, **TINY)


def test_registered_ids_and_nfe():
    assert {m for m in list_models() if get_spec(m).family == "soflow"} == set(MODEL_TYPES)
    info = model_info("soflow-xl2")
    assert (info.nfe, info.sequential_steps, info.sample_shape, info.image_size) == (1, 1, (4, 32, 32), 256)
    info = model_info("soflow-b2", **TINY, num_steps=3)
    assert (info.nfe, info.sequential_steps) == (3, 3)


def test_decodes_with_sd_vae_ft_mse():
    assert get_spec("soflow-b2").decoder == SD_VAE_DECODER
    s = load_sampler("soflow-b2", device="meta", **TINY)
    assert s.vae_spec == SD_FT_MSE and s.vae_spec.norm.scale == (0.18215,) * 4


@pytest.fixture
def tiny(make_random_sampler):
    return make_random_sampler("soflow-b2", **TINY)


def test_guidance_zero_is_accepted(tiny):
    z = noise()
    assert torch.equal(tiny.generate(z, LABELS, guidance=0), tiny.generate(z, LABELS))


@pytest.mark.parametrize("options,message", [
    (dict(guidance=1.0), r"guidance is trained into the weights .* got guidance=1.0"),
    (dict(guidance=-0.5), r"guidance is trained into the weights"),
    (dict(guidance=float("nan")), r"guidance must be a finite number"),
    (dict(num_steps=0), r"num_steps must be a positive integer, got 0"),
    (dict(num_steps=1.5), r"num_steps must be a positive integer, got 1.5"),
    (dict(num_steps=True), r"num_steps must be a positive integer, got True"),
    (dict(num_steps=2, step_noise=step_noise(3)),
     r"step_noise has shape \(3, 2, 4, 8, 8\), expected \(3, 1, 4, 8, 8\)"),
    (dict(num_steps=2, step_noise=noise()), r"step_noise has shape \(3, 4, 8, 8\), expected \(3, 1, 4, 8, 8\)"),
    (dict(num_steps=2, step_noise=step_noise(2, n=4)), r"step_noise has shape \(4, 1, 4, 8, 8\)"),
    (dict(num_steps=2, step_noise=step_noise(2, shape=(4, 16, 16))), r"expected \(3, 1, 4, 8, 8\)"),
    (dict(step_noise=step_noise(2)), r"step_noise has shape \(3, 1, 4, 8, 8\), expected \(3, 0, 4, 8, 8\)"),
    (dict(num_steps=2, step_noise=[[0.0]] * 3), r"step_noise must be a floating-point tensor .* got list"),
    (dict(num_steps=2, step_noise=torch.zeros(3, 1, 4, 8, 8, dtype=torch.long)), r"floating-point tensor"),
    (dict(steps=2), r"unknown option"),
])
def test_bad_options_are_input_errors(tiny, options, message):
    with pytest.raises(InputError, match=message):
        tiny.generate(noise(), LABELS, **options)


@pytest.mark.parametrize("overrides,message", [
    (dict(noising_type="Trig"), r"only noising_type='Linear' with coefficient_type='Euler'.*noising_type='Trig'"),
    (dict(coefficient_type="Trig"), r"coefficient_type='Trig'"),
    (dict(num_steps=0), r"num_steps must be a positive integer"),
    (dict(num_heads=3), r"not divisible by num_heads"),
    (dict(input_size=9), r"not a multiple of patch_size"),
])
def test_bad_config_is_an_input_error(overrides, message):
    with pytest.raises(InputError, match=message):
        model_info("soflow-b2", **{**TINY, **overrides})


def test_docstring_examples_run():
    assert doctest.testmod(soflow_model).failed == 0
    assert doctest.testmod(adapters.soflow).failed == 0
