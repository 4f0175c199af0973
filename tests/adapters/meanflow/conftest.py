"""Fixtures of the MeanFlow tests: the official code (github:Gsunshine/meanflow, never committed)
and a TrainState of its own, with random non-zero weights, saved as its ckpt_util saves it.

The official modules are imported once per session through `import_reference` (the
``reference_code`` fixture); train.py imports training-only modules that are stubbed in
``sys.modules`` while it imports (ml_collections, clu, and its FID, VAE and data-pipeline
utilities: only ``create_train_state`` is used). Nothing here writes outside pytest's
temporary folders.
"""

from __future__ import annotations

import sys
import types
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adapters import load_sampler

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

REPO = ("meanflow", "Gsunshine/meanflow")
# A small official DiT: models_dit.DiT's arguments, equal to nfebench's overrides of the same network.
SMALL = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)
STEP = 1200  # the saved TrainState's step: ckpt_util writes checkpoint_1200/
# A parity case's mode -> (labels drawn, else the null class; the official guidance_eq; our g, the
# config's trained guidance): the released recipe (omega 1, kappa 0.5: g = 1), a model trained
# without guidance (g = 0), and the null class.
MODES = {"cfg": (True, "cfg", 1.0), "none": (True, "none", 0.0), "uncond": (False, "cfg", 1.0)}
_TRAINING_ONLY = ("ml_collections", "clu", "clu.metric_writers", "utils.fid_util", "utils.vae_util",
                  "utils.input_pipeline")

_cache: dict = {}


def _stub(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.ConfigDict = dict  # train.py annotates with ml_collections.ConfigDict
    module.metric_writers = module.LatentManager = None
    return module


def perturb(tree, seed: int):
    """Seeded noise added to every leaf (matrices std 1/sqrt(fan-in), vectors 0.1): the official
    init zeroes every adaLN modulation and the output layer, which would make the sampler the
    identity and every comparison trivial."""
    rng = np.random.default_rng(seed)

    def one(a):
        a = np.asarray(a)
        std = float(np.prod(a.shape[:-1])) ** -0.5 if a.ndim >= 2 else 0.1
        return jnp.asarray(a + std * rng.standard_normal(a.shape).astype(a.dtype))

    return jax.tree_util.tree_map(one, tree)


def _nchw(a) -> torch.Tensor:
    """A JAX (N, H, W, C) array -> a torch (N, C, H, W) tensor."""
    return torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()


class Official:
    """The official modules (`meanflow`, `models_dit`, `ckpt_util`, `train`) and what the tests do with them."""

    def __init__(self, modules, monkeypatch):
        self.meanflow, self.models_dit, self.ckpt_util, self.train = modules
        self._monkeypatch = monkeypatch

    perturb = staticmethod(perturb)

    def model_str(self, size: dict) -> str:
        """A models_dit factory of `size` (for MeanFlow(model_str=...)), registered for this test."""
        name = "DiT_test_" + "_".join(f"{v}" for v in size.values())
        self._monkeypatch.setattr(self.models_dit, name, partial(self.models_dit.DiT, **size), raising=False)
        return name

    def meanflow_module(self, size: dict, **kwargs):
        return self.meanflow.MeanFlow(model_str=self.model_str(size), model_config={},
                                      num_classes=size["num_classes"], **kwargs)

    def state(self, size: dict = SMALL, seed: int = 0, *, trained: bool = True):
        """train.py's create_train_state for a MeanFlow of `size`; `trained`: params and EMA then
        replaced by two different perturbations of the init, as after training (the EMA differs)."""
        config = SimpleNamespace(training=SimpleNamespace(adam_b2=0.95))
        state = self.train.create_train_state(jax.random.key(seed), config, self.meanflow_module(size),
                                              size["input_size"], 1e-4)
        if not trained:
            return state
        return state.replace(step=STEP, params=perturb(state.params, seed + 1),
                             ema_params=perturb(state.params, seed + 2))

    def sample(self, params, num_steps: int, *, size: dict = SMALL, labels: bool = True, seed: int = 0, n: int = 3,
               timesteps: bool = True, guidance_eq: str = "cfg"):
        """The official ``generate`` -> (noise, labels or None, samples), torch NCHW.

        ``timesteps`` sets ``sampling_timesteps = linspace(1, 0, k + 1)`` (without it the official
        grid is [1, 0] whatever num_steps is). ``labels=False`` samples the null class
        (``class_idx = num_classes``). The noise and labels returned are the ones generate draws,
        from its own key splits.
        """
        side, classes = size["input_size"], size["num_classes"]
        grid = jnp.linspace(1.0, 0.0, num_steps + 1) if timesteps else None
        model = self.meanflow_module(size, num_steps=num_steps, sampling_timesteps=grid, guidance_eq=guidance_eq)
        config = SimpleNamespace(sampling=SimpleNamespace(num_steps=num_steps),
                                 dataset=SimpleNamespace(num_classes=classes, image_size=side, image_channels=4))
        rng = jax.random.key(seed)
        out = self.meanflow.generate({"params": params}, model, rng, n, config, class_idx=None if labels else classes)
        rng_noise, rest = jax.random.split(rng, 2)  # generate's order: the noise, then the labels
        noise = jax.random.normal(rng_noise, (n, side, side, 4))
        _, rng_labels = jax.random.split(rest, 2)
        drawn = torch.from_numpy(np.array(jax.random.randint(rng_labels, (n,), 0, classes))).long()
        return _nchw(noise), drawn if labels else None, _nchw(out)

    def assert_reproduced(self, saved, num_steps: int, mode: str, *, tol: float, load=load_sampler):
        """nfebench's meanflow-b4 loaded from the `saved` work dir by `load` (load_sampler's
        arguments; `SMALL`'s sizes and the `MODES` guidance of `mode`) samples the official
        ``generate``'s noise and labels in `num_steps` within `tol` (relative); returns the sampler."""
        state, workdir = saved
        labels, guidance_eq, g = MODES[mode]
        noise, labels, ref = self.sample(state.ema_params, num_steps, labels=labels, guidance_eq=guidance_eq)
        s = load("meanflow-b4", str(workdir), **SMALL, guidance=g)
        out = np.asarray(s.generate(noise, labels, guidance=g, num_steps=num_steps), np.float64)
        dev = float(np.abs(out - ref.double().numpy()).max() / ref.double().abs().max())
        backend = getattr(s, "backend", "torch")  # JaxSampler says; the torch samplers do not
        print(f"meanflow {backend} k={num_steps} {mode}: relative deviation {dev:.2e}")
        assert dev <= tol
        assert (ref - noise).abs().max() > 0.5  # the network moved the sample: the check has teeth
        return s


@pytest.fixture
def official(reference_code, monkeypatch) -> Official:
    """The official code (`Official`); skips, naming what to fetch, where it is absent."""
    if "modules" not in _cache:
        with monkeypatch.context() as m:
            for name in _TRAINING_ONLY:
                m.setitem(sys.modules, name, _stub(name))
            _cache["modules"] = reference_code(*REPO, "meanflow", "models.models_dit", "utils.ckpt_util", "train")
    # train.py and ema_util call jax.tree_leaves and jax.tree_map, which JAX 0.6 removed; the same
    # functions live on in jax.tree_util.
    monkeypatch.setattr(jax, "tree_leaves", jax.tree_util.tree_leaves, raising=False)
    monkeypatch.setattr(jax, "tree_map", jax.tree_util.tree_map, raising=False)
    return Official(_cache["modules"], monkeypatch)


@pytest.fixture
def saved(official, tmp_path_factory):
    """(the trained-like TrainState of `SMALL`, the work dir ckpt_util.save_checkpoint wrote
    checkpoint_<STEP>/ into, as train.py calls it on its replicated state)."""
    if "saved" not in _cache:
        from flax import jax_utils

        state = official.state()
        workdir = tmp_path_factory.mktemp("meanflow-workdir")
        official.ckpt_util.save_checkpoint(jax_utils.replicate(state), str(workdir))
        _cache["saved"] = (state, workdir)
    return _cache["saved"]
