"""FACM's official code (github:ali-vilab/FACM, never committed) for the parity tests, and what it
imports that nfebench does not install, stubbed for the duration of one test.

- ``fairscale``: ``ldit/rmsnorm.py`` imports its model-parallel layers at the top for a LLaMA
  transformer that LightningDiT never builds; only ``RMSNorm`` is used, which needs none of them.
- ``einops`` (when not installed): ``ldit/pos_embed.py`` uses three patterns, written out below
  with einops' meaning; any other pattern fails loudly.
- ``omegaconf`` (when not installed): ``ldit/model_manager.py`` reads ``lightningdit.yaml``
  through ``OmegaConf.load``; the stub reads the same yaml with attribute access.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml


class _Unused:
    """A fairscale layer class: importable, never built by LightningDiT."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("fairscale stub: LightningDiT was not expected to build a model-parallel layer")


def _rearrange(x, pattern, **axes):
    if pattern == "... (d r) -> ... d r":
        return x.unflatten(-1, (-1, axes["r"]))
    if pattern == "... d r -> ... (d r)":
        return x.flatten(-2)
    raise NotImplementedError(f"einops stub: rearrange {pattern!r}")


def _repeat(x, pattern, **axes):
    if pattern == "... n -> ... (n r)":
        return x.repeat_interleave(axes["r"], dim=-1)
    raise NotImplementedError(f"einops stub: repeat {pattern!r}")


class _AttrDict(dict):
    """A yaml mapping read with attribute access, as OmegaConf's DictConfig is."""

    def __getattr__(self, key):
        try:
            value = self[key]
        except KeyError:
            raise AttributeError(key) from None
        return _AttrDict(value) if isinstance(value, dict) else value


def _stub_modules() -> dict[str, types.ModuleType]:
    stubs: dict[str, types.ModuleType] = {}
    names = ("fairscale", "fairscale.nn", "fairscale.nn.model_parallel", "fairscale.nn.model_parallel.initialize",
             "fairscale.nn.model_parallel.layers")
    for name in names:
        stubs[name] = types.ModuleType(name)
    for parent, child in zip(names, names[1:]):
        if child.startswith(parent + "."):
            setattr(stubs[parent], child.rsplit(".", 1)[1], stubs[child])
    setattr(stubs["fairscale.nn.model_parallel"], "layers", stubs["fairscale.nn.model_parallel.layers"])
    for cls in ("ColumnParallelLinear", "RowParallelLinear", "ParallelEmbedding"):
        setattr(stubs["fairscale.nn.model_parallel.layers"], cls, _Unused)
    if importlib.util.find_spec("einops") is None:
        stubs["einops"] = types.ModuleType("einops")
        stubs["einops"].rearrange, stubs["einops"].repeat = _rearrange, _repeat
    if importlib.util.find_spec("omegaconf") is None:
        stubs["omegaconf"] = types.ModuleType("omegaconf")
        stubs["omegaconf"].OmegaConf = types.SimpleNamespace(
            load=lambda path: _AttrDict(yaml.safe_load(Path(path).read_text())))
    return stubs


@pytest.fixture
def ref(reference_code, monkeypatch):
    """FACM's modules: ``ref.ldit`` (lightningdit), ``ref.autoencoder``, ``ref.manager`` (model_manager),
    ``ref.sampler``, and ``ref.root`` (the folder), or a skip naming what is missing."""
    for name, module in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    ldit, autoencoder, manager, sampler = reference_code("facm", "ali-vilab/FACM", "ldit.lightningdit",
                                                         "ldit.autoencoder", "ldit.model_manager", "sampler")
    root = Path(ldit.__file__).parents[1]
    return types.SimpleNamespace(ldit=ldit, autoencoder=autoencoder, manager=manager, sampler=sampler, root=root)


@pytest.fixture
def extract_ema(ref):
    """utils/extract_ema.py's ``extract_ema_weights(input, output)``, loaded as the script it is
    (the ``utils`` package's __init__ imports the training stack)."""
    spec = importlib.util.spec_from_file_location("facm_extract_ema", ref.root / "utils" / "extract_ema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.extract_ema_weights


# What the tiny reference overrides of LightningDiT-XL/1 (the yaml's input_size 16 and 32 channels stay);
# the tests load nfebench's with the same sizes. 1000 classes: the reference's sampler hard-codes null label 1000.
SHRINK = dict(hidden_size=64, depth=2, num_heads=4)


@pytest.fixture
def reference_dit(ref, randomize, monkeypatch):
    """``reference_dit(seed=0, shrink=SHRINK, num_classes=1000)``: LightningDiT as test.py builds it,
    ``create_models_from_config("ldit/lightningdit.yaml")``'s ``load_dit`` (the yaml's switches,
    model_type LightningDiT-XL/1), its depth and width `shrink`-sized (None: full size), random
    non-zero weights, evaluation mode with fused attention as test.py sets it."""
    full = ref.ldit.LightningDiT_models["LightningDiT-XL/1"]

    def make(seed=0, shrink=SHRINK, num_classes=1000):
        sized = full if shrink is None else (lambda **kw: ref.ldit.LightningDiT(**{**kw, "patch_size": 1, **shrink}))
        monkeypatch.setitem(ref.ldit.LightningDiT_models, "LightningDiT-XL/1", sized)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = ref.manager.ModelManager(str(ref.root / "ldit" / "lightningdit.yaml")).load_dit(num_classes)
        monkeypatch.setitem(ref.ldit.LightningDiT_models, "LightningDiT-XL/1", full)
        randomize(net, seed)
        for block in net.blocks:
            block.attn.fused_attn = True
        return net.eval()

    return make
