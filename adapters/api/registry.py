"""Model registry: ids -> (family, default config, builder, and what the harness may ask of the family).

A family registers its ids with `register_sizes` (one table per family) or `register`. Every
family, the built-in ones included, is found through the ``nfebench.adapters`` entry-point
group: pyproject.toml names each built-in family's package there exactly as a researcher's own
distribution names theirs, and loading an entry point imports the package, which registers its
ids. Entry points are loaded on the first call that needs the registry, so `nfebench --help`
imports no network code.

What the orchestration needs of a family beyond building it goes through its `ModelSpec`: the
Flax port (`jax_port`), the decoder's cost (`decoder`), a track's training objective
(`trainer`) and a decoding plan (`decoding_plan`); hooks are ``"module:function"`` strings
imported when first used, so registering costs nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch.overrides import TorchFunctionMode

from adapters.api.checkpoint import CheckpointRef
from adapters.api.config import check_overrides
from adapters.api.errors import InputError
from adapters.api.files import atomic_write
from adapters.api.sampler import RANDOM_INIT, DecoderInfo, ModelInfo, Sampler
from adapters.api.seeding import seeded_init

ENTRY_POINT_GROUP = "nfebench.adapters"
Builder = Callable[..., Sampler]  # builder(name, config, *, checkpoint: CheckpointRef | None, device, dtype) -> Sampler


@dataclass(frozen=True)
class ModelSpec:
    """One registered model id: a frozen config dataclass of defaults, the builder using it, and
    the hooks through which the harness reaches the family without importing it.

    Hooks are ``"module:function"`` (or, for `jax_port`, a module) strings, imported by
    `resolve` when first used:

    - ``jax_port``: the module of the Flax port; its ``load(torch_sampler, *, dtype, device)``
      returns the JAX sampler with the same weights (``load_sampler(..., backend="jax")``).
    - ``trainer``: ``trainable(sampler, images, labels, *, teacher, draws, seed) -> Trainable``,
      the modules a track trains and their objective (see `adapters.api.training`).
    - ``decoding_plan``: ``plan(sampler, images, labels) -> (options, how)``, the options of a
      family-specific fast decoding chosen on training images, and how they were chosen.
    - ``decoder``: what the decoder of a latent family costs (`DecoderInfo`); None for pixel space.

    ``infos`` is the family's ``infos.json``: the `ModelInfo` of each id at its default config
    with random weights, written by `write_infos` (``nfebench list --write-infos``) and held equal
    to the built model by a test, so `model_info` answers without building (``nfebench list``).
    """

    name: str
    family: str
    config: Any  # a frozen dataclass instance; load_sampler overrides its fields
    build: Builder
    description: str = ""
    jax_port: str | None = None
    trainer: str | None = None
    decoding_plan: str | None = None
    decoder: DecoderInfo | None = None
    infos: Path | None = None

    def resolve(self, hook: str) -> Any:
        """The object a hook names (``"trainer"``, ``"decoding_plan"``), imported now; an id
        whose family has no such hook is an InputError naming it."""
        target = getattr(self, hook)
        if target is None:
            raise InputError(f"{self.name}: family {self.family!r} has no {hook.replace('_', ' ')}")
        module, _, attr = target.partition(":")
        return getattr(import_module(module), attr) if attr else import_module(module)


class Size(NamedTuple):
    """One row of a family's size table: the id's config and its one-line description."""

    config: Any
    description: str


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def register(name: str, *, family: str, config: Any, build: Builder, description: str = "",
             jax_port: str | None = None, trainer: str | None = None, decoding_plan: str | None = None,
             decoder: DecoderInfo | None = None, infos: str | Path | None = None) -> None:
    """Add a model id (see `ModelSpec` for the hooks). Duplicate ids are refused so two families
    cannot shadow each other."""
    if name in _REGISTRY:
        raise ValueError(f"model id {name!r} is already registered by family {_REGISTRY[name].family!r}")
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"{name}: config must be a dataclass instance, got {type(config).__name__}")
    _REGISTRY[name] = ModelSpec(name, family, config, build, description, jax_port, trainer, decoding_plan, decoder,
                                None if infos is None else Path(infos))


def register_sizes(sizes: Mapping[str, Size | tuple[Any, str]], *, family: str, build: Builder, **hooks: Any) -> None:
    """Register every id of a family's size table, ``{id: Size(config, description)}``, with one
    builder and the same hooks (`register`'s keywords).

    Example::

        register_sizes({"sit-b2": Size(SiTConfig(), "SiT-B/2"), "sit-xl2": Size(XL2, "SiT-XL/2")},
                       family="sit", build=build, jax_port="adapters.sit.jax_port", decoder=SD_VAE)
    """
    for name, (config, description) in sizes.items():
        register(name, family=family, config=config, build=build, description=description, **hooks)


def _ensure_loaded() -> None:
    """Load every ``nfebench.adapters`` entry point (each registers its family's ids)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    found = entry_points(group=ENTRY_POINT_GROUP)
    for ep in found:
        try:
            ep.load()  # importing the module registers its ids
        except ImportError as exc:
            dist = f" of {ep.dist.name}" if ep.dist is not None else ""
            raise InputError(f"the model family {ep.name!r}{dist} (entry point {ep.value!r}) does not import: "
                             f"{exc}") from exc
    if not found:
        raise InputError(f"no model families are installed: families are found through the {ENTRY_POINT_GROUP!r} "
                         f"entry points of installed packages, and none is; install nfebench (pip install -e . "
                         f"in its checkout) so its built-in families are registered")


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
    """The id's default config with `config_overrides` applied, each checked against its field's
    declared type (`adapters.api.config.check_overrides`); unknown keys are named."""
    spec = get_spec(model_id)
    return dataclasses.replace(spec.config, **check_overrides(model_id, spec.config, config_overrides))


BACKENDS = ("torch", "jax")


def load_sampler(model_id: str, checkpoint: str | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, *, backend: str = "torch", ema: str | None = None,
                 **config_overrides: Any) -> Sampler:
    """Build the sampler registered as `model_id`.

    Args:
        model_id: a registered id (see `list_models()`), e.g. ``"biflow-b2"``.
        checkpoint: path to a checkpoint file (a state_dict, or a training script's dictionary
            such as ``{"model", "ema", "opt", "args"}``; see `adapters.api.checkpoint`); None builds
            random weights (``info.weights == "random-init"``).
        device: torch device for the generator (and decoder). ``"meta"`` builds without
            memory, for counting parameters.
        dtype: parameter and compute dtype.
        backend: "torch", or "jax" for the family's Flax port (`ModelSpec.jax_port`) with the
            same weights; `device` is then a JAX platform ("auto", "cpu", "gpu" or "tpu") and
            `dtype` may be given by name.
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
        return _load_jax(model_id, checkpoint, dtype=dtype, device=str(device), ema=ema, **config_overrides)
    spec = get_spec(model_id)
    config = resolve_config(model_id, **config_overrides)
    device = torch.device(device)
    ref = None if checkpoint is None else CheckpointRef(Path(checkpoint), ema)
    with seeded_init(device):
        return spec.build(model_id, config, checkpoint=ref, device=device, dtype=dtype)


def _load_jax(model_id: str, checkpoint: str | None, *, dtype: Any, device: str, ema: str | None,
              **config_overrides: Any) -> Sampler:
    """The family's Flax port with the weights its PyTorch adapter loads (built on the CPU)."""
    spec = get_spec(model_id)
    if spec.jax_port is None:
        ported = sorted(m for m in list_models() if get_spec(m).jax_port)
        raise InputError(f"{model_id}: family {spec.family!r} has no JAX port (ported ids: {', '.join(ported)}); "
                         f"run it with --backend torch")
    port = spec.resolve("jax_port")
    torch_sampler = load_sampler(model_id, checkpoint=checkpoint, device="cpu", ema=ema, **config_overrides)
    return port.load(torch_sampler, dtype=dtype, device=device)


# torch.nn.init's in-place initialisers, those nn.Linear, nn.Conv*, nn.Embedding, the norms and the
# families' own init functions call (also what `adapters.builder.skip_init` disables).
NN_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")
# With the tensor methods they call: on the meta device there are no values to fill, yet each call
# runs torch's Python decompositions (and the first one imports torch._dynamo), which made counting
# every registered model take seconds.
_INITIALISERS = frozenset({*NN_INITIALISERS, "fill_", "zero_", "erfinv_", "mul_", "add_", "clamp_", "copy_"})


class _SkipMetaInit(TorchFunctionMode):
    """Initialisers applied to meta tensors return at once; everything else runs as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes its tensor by keyword
        if getattr(func, "__name__", None) in _INITIALISERS and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def _built_info(model_id: str, **config_overrides: Any) -> ModelInfo:
    """ModelInfo of an id built on the meta device without running initialisers."""
    with _SkipMetaInit():
        return load_sampler(model_id, device="meta", **config_overrides).info


_infos_read: dict[Path, dict[str, Any]] = {}  # infos.json files read in this process


def _cached_info(spec: ModelSpec) -> ModelInfo | None:
    """The id's entry of its family's infos.json, or None (no file, or the id is not in it)."""
    if spec.infos is None or not spec.infos.is_file():
        return None
    if spec.infos not in _infos_read:
        _infos_read[spec.infos] = json.loads(spec.infos.read_text())
    entry = _infos_read[spec.infos].get(spec.name)
    if entry is None:
        return None
    return ModelInfo(**{**entry, "sample_shape": tuple(entry["sample_shape"])}, weights=RANDOM_INIT)


def model_info(model_id: str, **config_overrides: Any) -> ModelInfo:
    """ModelInfo of an id with random weights: at its default config from its family's infos.json
    when it has one (no build at all), else built on the meta device without initialising weights
    (no memory, little time; shapes, counts and FLOPs do not depend on values)."""
    if not config_overrides:
        cached = _cached_info(get_spec(model_id))
        if cached is not None:
            return cached
    return _built_info(model_id, **config_overrides)


def write_infos() -> list[Path]:
    """Write every family's infos.json from its built models (one file per `ModelSpec.infos`, ids
    sorted, atomically); returns the files written. Run it (``nfebench list --write-infos``) after
    changing a family's architecture or size table: a test holds the files to the built models."""
    files: dict[Path, dict[str, Any]] = {}
    for model_id in list_models():
        spec = get_spec(model_id)
        if spec.infos is not None:
            info = _built_info(model_id).to_dict()
            del info["weights"]  # random-init by definition: the infos are of the default config's build
            files.setdefault(spec.infos, {})[model_id] = info
    for path, entries in files.items():
        atomic_write(path, json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
        _infos_read.pop(path, None)
    return sorted(files)
