"""Model registry: ids -> (family, default config, builder), with outside families via entry points.

Each built-in family is one package, ``adapters/<family>/``, whose ``__init__`` registers its
ids (`FAMILIES` lists them: adding a family is one folder plus one line there). Families are
imported lazily, on the first call that needs the registry, so `nfebench --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from importlib import import_module
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from adapters.checkpoint import CheckpointRef
from harness.errors import InputError
from harness.sampler import ModelInfo, Sampler

ENTRY_POINT_GROUP = "nfebench.adapters"
RANDOM_INIT_SEED = 0  # the seed random weights are drawn with (see seeded_init)

# Built-in families: the package adapters.<name> is imported on demand and registers its ids.
FAMILIES = (
    "tarflow",  # TARFlow (apple/ml-tarflow) and iTARFlow, BiFlow's teacher
    "biflow",  # BiFlow's one-pass reverse model
    "flowmatch",  # Rectified Flow and MeanFlow on a DiT backbone (reconstructions; the mini track's rf-mini)
    "sit",  # SiT (willisma/SiT): the released Rectified Flow checkpoints, SiT's ODE sampler
    "imf",  # improved MeanFlow (Lyy-iiis/imeanflow): the released iMF-*-2.pth, k-step average-velocity sampler
    "pmf",  # pixel MeanFlow (Lyy-iiis/pMF): the released pMF-*.pt, pixel space, x-prediction
)

Builder = Callable[..., Sampler]  # builder(name, config, *, checkpoint: CheckpointRef | None, device, dtype) -> Sampler


@dataclass(frozen=True)
class ModelSpec:
    """One registered model id: a frozen config dataclass of defaults and the builder using it."""

    name: str
    family: str
    config: Any  # a frozen dataclass instance; load_sampler overrides its fields
    build: Builder
    description: str = ""
    jax_port: str | None = None  # module of the Flax port (convert_params, make_generate, FAMILY_OPTIONS)


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def register(name: str, *, family: str, config: Any, build: Builder, description: str = "",
             jax_port: str | None = None) -> None:
    """Add a model id. Duplicate ids are refused so two families cannot shadow each other.

    `jax_port` names the module of the family's Flax port, for ``backend="jax"``."""
    if name in _REGISTRY:
        raise ValueError(f"model id {name!r} is already registered by family {_REGISTRY[name].family!r}")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"{name}: config must be a dataclass instance, got {type(config).__name__}")
    _REGISTRY[name] = ModelSpec(name, family, config, build, description, jax_port)


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for family in FAMILIES:
        import_module(f"adapters.{family}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()  # importing the module registers its ids


def get_spec(model_id: str) -> ModelSpec:
    """The spec of `model_id`; an unknown id fails with the known ids and the nearest match."""
    _ensure_loaded()
    if model_id in _REGISTRY:
        return _REGISTRY[model_id]
    near = difflib.get_close_matches(model_id, list(_REGISTRY), n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise InputError(f"unknown model id {model_id!r}.{hint} Known ids: {', '.join(sorted(_REGISTRY))}")


def list_models() -> list[str]:
    """All registered model ids, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def resolve_config(model_id: str, **config_overrides: Any) -> Any:
    """The id's default config with `config_overrides` applied; unknown keys are named."""
    spec = get_spec(model_id)
    fields = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(config_overrides) - fields)
    if unknown:
        raise InputError(
            f"{model_id}: unknown config option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(fields))}"
        )
    return dataclasses.replace(spec.config, **config_overrides)


BACKENDS = ("torch", "jax")


def load_sampler(model_id: str, checkpoint: str | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, *, backend: str = "torch", ema: str | None = None,
                 **config_overrides: Any) -> Sampler:
    """Build the sampler registered as `model_id`.

    Args:
        model_id: a registered id (see `list_models()`), e.g. ``"biflow-b2"``.
        checkpoint: path to a checkpoint file (a state_dict, or a training script's dictionary
            such as ``{"model", "ema", "opt", "args"}``; see `adapters.checkpoint`); None builds
            random weights (``info.weights == "random-init"``).
        device: torch device for the generator (and decoder). ``"meta"`` builds without
            memory, for counting parameters.
        dtype: parameter and compute dtype.
        backend: "torch", or "jax" for the Flax port with the same weights
            (`adapters.jax.sampler.load_jax_sampler`; `device` is then a JAX platform:
            "auto", "cpu", "gpu" or "tpu", and `dtype` may be given by name).
        ema: which weights entry of a container checkpoint to load (``"model"``, ``"ema"``, ...);
            None: the EMA entry when the file has one. ``info.weights`` names the entry used.
        **config_overrides: fields of the id's config dataclass to change, e.g.
            ``num_blocks=2`` for a small TARFlow.

    Example::

        >>> s = load_sampler("tarflow", img_size=32, in_channels=3, patch_size=4, channels=64,
        ...                  num_blocks=2, layers_per_block=2, num_classes=10)
        >>> s.info.sample_shape
        (3, 32, 32)
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if ema is not None and checkpoint is None:
        raise InputError(f"{model_id}: ema={ema!r} chooses an entry of a checkpoint, but no checkpoint was given")
    if backend == "jax":
        from adapters.jax.sampler import load_jax_sampler

        return load_jax_sampler(model_id, checkpoint, dtype=dtype, device=str(device), ema=ema, **config_overrides)
    spec = get_spec(model_id)
    config = resolve_config(model_id, **config_overrides)
    device = torch.device(device)
    ref = None if checkpoint is None else CheckpointRef(Path(checkpoint), ema)
    with seeded_init(device):
        return spec.build(model_id, config, checkpoint=ref, device=device, dtype=dtype)


@contextmanager
def seeded_init(device: torch.device) -> Iterator[None]:
    """Run a build under a fixed seed, leaving the caller's random state untouched: random
    weights ("random-init") are then the same tensors in every process on a device type,
    so numbers measured on them are reproducible and can be held to a baseline."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(RANDOM_INIT_SEED)
        yield


def model_info(model_id: str, **config_overrides: Any) -> ModelInfo:
    """ModelInfo of an id with random weights, built on the meta device (no memory, no time)."""
    return load_sampler(model_id, device="meta", **config_overrides).info
