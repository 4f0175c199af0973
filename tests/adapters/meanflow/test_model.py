"""The official MeanFlow (adapters/meanflow) against its own code (github:Gsunshine/meanflow, under
$NFEBENCH_REFERENCE_DIR/meanflow, never committed): the Orbax TrainState its ckpt_util writes, its
``generate``, its parameter counts, and bad input.

The reference TrainState has random non-zero weights and an EMA that differs from them; the
sampler must load the EMA, as train.py samples it.
"""

from __future__ import annotations

import doctest
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import adapters.meanflow
import adapters.meanflow.checkpoint
import adapters.meanflow.model
from adapters import load_sampler, model_info
from adapters.api.checkpoint import folder_sha256
from adapters.api.errors import InputError
from adapters.meanflow.checkpoint import to_torch

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

# nfebench's overrides of the official DiT the conftest saves (its SMALL), and of the zipped one.
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)
LEGACY_TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=8, depth=1, num_heads=2, num_classes=10)
LEGACY = Path(__file__).parent / "data" / "mf-tiny-flax084-orbax044.zip"  # see data/README.md
TOL = 1e-4  # relative: max |ours - official| / max |official|, float32
# The official module's parameter counts (MeanFlow(model_str=...).init(...)["params"], as train.py
# logs them), literal so that CI without the reference code still checks them.
PARAMS = {"meanflow-b4": 131_165_248, "meanflow-b2": 131_091_472, "meanflow-m2": 308_019_216,
          "meanflow-l2": 459_137_040, "meanflow-xl2": 676_440_592}
FACTORY = {"meanflow-b4": "DiT_B_4", "meanflow-b2": "DiT_B_2", "meanflow-m2": "DiT_M_2", "meanflow-l2": "DiT_L_2",
           "meanflow-xl2": "DiT_XL_2"}
# 1 and 2 steps; the released recipe's trained guidance (omega 1, kappa 0.5: g = 1), a model trained
# without it (guidance_eq='none': g = 0), and the null class (conftest's MODES). Sampling is the same
# function of the weights in all three: guidance only changes what the weights were trained towards.
CASES = [(k, mode) for k in (1, 2) for mode in ("cfg", "none", "uncond")]


def rel(ours, ref) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def torch_sd(params) -> dict[str, torch.Tensor]:
    """An official param tree -> our state_dict, through the checkpoint mapping."""
    from flax.traverse_util import flatten_dict

    return to_torch({k: torch.from_numpy(np.array(v)) for k, v in flatten_dict(params, sep="/").items()}, "tree")


@pytest.mark.parametrize("model", sorted(PARAMS))
def test_parameter_counts_are_the_official_modules(model):
    assert model_info(model).params == PARAMS[model]


@pytest.mark.parametrize("model", sorted(PARAMS))
def test_parameter_counts_equal_the_reference(official, model):
    """The official module at full size, counted from shapes alone (jax.eval_shape: nothing is computed)."""
    mf = official.meanflow.MeanFlow(model_str=FACTORY[model], model_config={})
    x, t, y = jnp.ones((1, 32, 32, 4)), jnp.ones((1,)), jnp.ones((1,), jnp.int32)
    shapes = jax.eval_shape(mf.init, {"params": jax.random.key(0)}, x, t, y)["params"]
    assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes)) == PARAMS[model]


def test_the_checkpoint_folder_loads_its_ema(saved):
    state, workdir = saved
    step_folder = workdir / f"checkpoint_{int(state.step)}"
    assert (step_folder / "_METADATA").is_file()
    for given in (workdir, step_folder):  # the README's load_from, or the step folder itself
        s = load_sampler("meanflow-b4", checkpoint=str(given), **TINY)
        assert s.info.weights == folder_sha256(step_folder) + "#ema_params"
    ema, raw, ours = torch_sd(state.ema_params), torch_sd(state.params), s.net.state_dict()
    assert set(ours) == set(ema) and all(torch.equal(ours[k], ema[k]) for k in ours)
    assert not any(torch.equal(ours[k], raw[k]) for k in ours)  # the EMA differs from the raw weights everywhere
    picked = load_sampler("meanflow-b4", checkpoint=str(workdir), ema="params", **TINY)
    assert picked.info.weights.endswith("#params")
    assert all(torch.equal(picked.net.state_dict()[k], raw[k]) for k in raw)


def test_the_folder_fingerprint_is_sha256sum_over_its_files(saved):
    state, workdir = saved
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum (coreutils) is not installed")
    folder = workdir / f"checkpoint_{int(state.step)}"
    command = f"cd '{folder}' && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
    digest = subprocess.run(command, shell=True, check=True, capture_output=True, text=True).stdout.split()[0]
    assert folder_sha256(folder) == f"folder-sha256:{digest}"


@pytest.mark.parametrize("num_steps,mode", CASES)
def test_matches_the_official_sampler(official, saved, num_steps, mode):
    official.assert_reproduced(saved, num_steps, mode, tol=TOL)


def test_the_official_second_step_needs_sampling_timesteps(official, saved):
    """Without sampling_timesteps the official grid is [1, 0]: step 2 runs at t = r = 0 and changes nothing."""
    state, workdir = saved
    noise, labels, ref = official.sample(state.ema_params, 2, timesteps=False)
    s = load_sampler("meanflow-b4", checkpoint=str(workdir), **TINY)
    assert rel(s.generate(noise, labels, num_steps=1), ref) <= TOL
    assert rel(s.generate(noise, labels, num_steps=2), ref) > 100 * TOL


def test_the_network_is_the_official_forward_off_the_grid(official, saved):
    """u(z, t, h, y) at times no sampler visits, so both time embedders see arbitrary inputs."""
    state, workdir = saved
    net = official.models_dit.DiT(**TINY, class_dropout_prob=0.0)
    z = np.random.default_rng(3).standard_normal((4, 8, 8, 4)).astype(np.float32)
    t, h = np.array([0.9, 0.37, 0.05, 1.0], np.float32), np.array([0.3, 0.37, 0.0, 0.61], np.float32)
    y = [1, 0, 9, 10]  # 10: the null class
    ref = jax.jit(net.apply)({"params": state.ema_params["net"]}, z, t, h, jnp.array(y))  # (N, H, W, C)
    s = load_sampler("meanflow-b4", checkpoint=str(workdir), **TINY)
    with torch.no_grad():
        out = s.net(torch.from_numpy(z).permute(0, 3, 1, 2), torch.from_numpy(t), torch.tensor(y), torch.from_numpy(h))
    assert rel(out, torch.from_numpy(np.array(ref)).permute(0, 3, 1, 2)) <= TOL


def test_the_pinned_orbax_format_loads(official, tmp_path):
    """The released zip's layout as install.sh's stack writes it (flax 0.8.4, orbax-checkpoint 0.4.4:
    _METADATA and one msgpack file ``checkpoint``, no OCDBT; data/README.md). The official
    restore_checkpoint (flax's, with a TrainState target) reads the EMA the sample is compared with."""
    with zipfile.ZipFile(LEGACY) as z:
        z.extractall(tmp_path)
    workdir = tmp_path / "mf-tiny"
    assert sorted(p.name for p in (workdir / "checkpoint_7").iterdir()) == ["_METADATA", "checkpoint"]
    restored = official.ckpt_util.restore_checkpoint(official.state(LEGACY_TINY, trained=False), str(workdir))
    assert int(restored.step) == 7
    s = load_sampler("meanflow-b4", checkpoint=str(workdir), **LEGACY_TINY)
    assert s.info.weights == folder_sha256(workdir / "checkpoint_7") + "#ema_params"
    noise, labels, ref = official.sample(restored.ema_params, 2, size=LEGACY_TINY)
    dev = rel(s.generate(noise, labels, num_steps=2), ref)
    print(f"meanflow torch, pinned-format checkpoint, 2 steps: relative deviation {dev:.2e}")
    assert dev <= TOL and (ref - noise).abs().max() > 0.5
    ema, raw, ours = torch_sd(restored.ema_params), torch_sd(restored.params), s.net.state_dict()
    assert all(torch.equal(ours[k], ema[k]) and not torch.equal(ours[k], raw[k]) for k in ours)


@pytest.mark.slow
def test_full_size_b4_matches_the_official_step(official):
    """meanflow-b4 at full size (131M): the official init, perturbed, mapped in memory (no 2 GB save);
    the official solver_step from t = 1 to r = 0 against our one-step sample."""
    mf = official.meanflow.MeanFlow(model_str="DiT_B_4", model_config={})
    x, t, y = jnp.ones((1, 32, 32, 4)), jnp.ones((1,)), jnp.ones((1,), jnp.int32)
    params = official.perturb(mf.init({"params": jax.random.key(0)}, x, t, y)["params"], 5)
    s = load_sampler("meanflow-b4")
    s.net.load_state_dict(torch_sd(params), strict=True)
    z = np.random.default_rng(0).standard_normal((2, 32, 32, 4)).astype(np.float32)
    labels = jnp.array([207, 1000])  # a class, and the null class
    ref = mf.apply({"params": params}, jnp.asarray(z), jnp.ones(2), jnp.zeros(2), labels, method=mf.solver_step,
                   rngs={"gen": jax.random.key(1)})  # (N, H, W, C)
    ref = torch.from_numpy(np.array(ref)).permute(0, 3, 1, 2)
    noise = torch.from_numpy(z).permute(0, 3, 1, 2)
    dev = rel(s.generate(noise[:1], torch.tensor([207])), ref[:1])
    dev_null = rel(s.generate(noise[1:], None), ref[1:])
    print(f"meanflow-b4 full size, 1 step: relative deviation {dev:.2e} (class), {dev_null:.2e} (null class)")
    assert max(dev, dev_null) <= TOL and (ref - noise).abs().max() > 0.5


def test_a_folder_without_a_checkpoint_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"holds no checkpoint: it is neither an Orbax checkpoint folder \(with "
                                         r"_METADATA\) nor a folder holding checkpoint_<step> ones"):
        load_sampler("meanflow-b4", checkpoint=str(tmp_path), **TINY)
    (tmp_path / "checkpoint_5").mkdir()  # a step folder Orbax never finished: no _METADATA
    (tmp_path / "checkpoint_9").write_bytes(b"\x80")  # flax's msgpack format, without Orbax
    with pytest.raises(InputError, match=r"checkpoint_9 are flax msgpack files, written without Orbax"):
        load_sampler("meanflow-b4", checkpoint=str(tmp_path), **TINY)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "_METADATA").write_text("{not json")
    with pytest.raises(InputError, match="could not be restored by orbax"):
        load_sampler("meanflow-b4", checkpoint=str(broken), **TINY)


def test_a_checkpoint_of_another_size_names_the_tensors(saved):
    _, workdir = saved
    with pytest.raises(InputError, match=r"missing tensors: blocks\.2\."):
        load_sampler("meanflow-b4", checkpoint=str(workdir), **{**TINY, "depth": 3})
    with pytest.raises(InputError, match=r"mis-shaped tensors: .*x_embedder\.proj\.weight \(file \(64, 4, 2, 2\), "
                                         r"model \(64, 4, 4, 4\)\)"):
        load_sampler("meanflow-b4", checkpoint=str(workdir), **{**TINY, "patch_size": 4})


@pytest.mark.parametrize("guidance", [0.0, 2.0, 0.5])
def test_a_guidance_other_than_the_trained_one_is_an_input_error(guidance):
    s = load_sampler("meanflow-b4", **TINY)  # trained g = 1 (omega 1, kappa 0.5: cfg scale 2)
    with pytest.raises(InputError, match=rf"guidance is trained into the weights \(g = 1.0, cfg scale 2.0\); "
                                         rf"guidance {guidance} cannot be run"):
        s.generate(torch.zeros(1, 4, 8, 8), torch.tensor([1]), guidance=guidance)
    assert s.generate(torch.zeros(1, 4, 8, 8), torch.tensor([1]), guidance=1.0).shape == (1, 4, 8, 8)


def test_bad_config_and_options_are_input_errors():
    with pytest.raises(InputError, match="guidance must be a finite number"):
        load_sampler("meanflow-b4", **TINY, guidance=float("nan"))
    with pytest.raises(InputError, match="num_steps must be a positive integer, got 0"):
        load_sampler("meanflow-b4", **TINY, num_steps=0)
    s = load_sampler("meanflow-b4", **TINY)
    with pytest.raises(InputError, match="num_steps must be a positive integer, got -1"):
        s.generate(torch.zeros(1, 4, 8, 8), None, num_steps=-1)
    with pytest.raises(InputError, match="unknown option.*accepts: num_steps"):
        s.generate(torch.zeros(1, 4, 8, 8), None, solver="heun")
    with pytest.raises(InputError, match="input_size 8 is not a multiple of patch_size 3"):
        model_info("meanflow-b4", **{**TINY, "patch_size": 3})


def test_the_old_name_steps_still_works_and_says_it_is_deprecated(make_random_sampler):
    s = make_random_sampler("meanflow-b4", seed=0, **TINY)
    z, y = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 2])
    with pytest.warns(DeprecationWarning, match="steps is deprecated: use num_steps"):
        old = s.generate(z, y, steps=2)
    assert torch.equal(old, s.generate(z, y, num_steps=2))
    with pytest.warns(DeprecationWarning, match="config option steps is deprecated"):
        assert model_info("meanflow-b4", **TINY, steps=3).nfe == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model_info("meanflow-b4", **TINY, num_steps=3).nfe == 3


def test_defaults_nfe_and_decoder():
    info = model_info("meanflow-b4")
    assert (info.family, info.nfe, info.sequential_steps, info.sample_shape, info.image_size, info.num_classes) == \
        ("meanflow", 1, 1, (4, 32, 32), 256, 1000)
    s = load_sampler("meanflow-b4", device="meta")
    assert s.vae_spec.repo == "stabilityai/sd-vae-ft-mse" and s.family_options == ("num_steps",)
    assert s.config.guidance == 1.0 and model_info("meanflow-b4", num_steps=2).nfe == 2


def test_docstring_examples_run():
    for module in (adapters.meanflow, adapters.meanflow.model, adapters.meanflow.checkpoint):
        assert doctest.testmod(module).failed == 0, module.__name__
