"""Checkpoint files: read released and training-script checkpoints safely, choose the weights
entry (EMA first), load strictly with errors that name tensors, and fingerprint what was used.

Released checkpoints come in a few shapes, and one reader serves them all:

- a plain state_dict (TARFlow's ``afhq_model_8_768_8_8_0.07.pth``, SiT's ``SiT-XL-2-256x256.pt``,
  iMF's ``iMF-XL-2.pth``);
- a training-script dictionary such as SiT's ``{"model", "ema", "opt", "args"}``, where
  ``args`` is an ``argparse.Namespace`` and ``opt`` an optimizer state;
- safetensors files;
- an Orbax checkpoint folder, as flax's ``save_checkpoint`` writes a JAX TrainState
  (MeanFlow's ``checkpoint_<step>/`` of {step, params, opt_state, ema_params}), or the folder
  holding such ``checkpoint_<step>`` folders (the highest step is read, as flax's
  ``restore_checkpoint`` does). It is restored by orbax without a target (orbax rebuilds the
  tree from the folder's ``_METADATA``, in either of its layouts: OCDBT's ``manifest.ocdbt``
  and ``d/``, or the one msgpack file ``checkpoint`` that flax 0.8 with orbax 0.4 writes), so
  no JAX model is needed, and each top-level entry becomes a state_dict whose keys join the
  tree's path with ``/`` (``ema_params`` -> ``{"net/x_embedder/proj/kernel": ...}``).

Files are read with ``torch.load(weights_only=True)``: no pickled code runs. Metadata
classes known to be plain data (`SAFE_GLOBALS`) are allowed; any other class the pickle
names is replaced by an inert placeholder and named in a `CheckpointWarning`, so the weights
still load and nothing unknown is executed.

When a file holds several weight entries, the EMA entry is chosen, as SiT's ``find_model``
does; ``entry=`` (``load_sampler(..., ema=KEY)``, ``--set ema=KEY``) chooses another. The
fingerprint (`ModelInfo.weights`) is ``sha256:<hex of the file>`` followed by ``#<entry>``
when an entry was chosen out of a container, e.g. ``sha256:3f...9a#ema``; of an Orbax folder
it is ``folder-sha256:<hex>#<entry>`` over the files of the step folder read (`folder_sha256`).

Example::

    weights = load_checkpoint(net, CheckpointRef("SiT-XL-2-256x256.pt"))     # "sha256:..."
    weights = load_checkpoint(net, CheckpointRef("0400000.pt", entry="model"))  # "sha256:...#model"
"""

from __future__ import annotations

import argparse
import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from adapters.api.errors import InputError
from adapters.api.files import file_digest

# Classes that real checkpoints carry as metadata and that are plain data: allowed when unpickling.
SAFE_GLOBALS = (argparse.Namespace,)
# Container keys that hold EMA weights, most specific first.
EMA_KEYS = ("ema", "model_ema", "ema_model", "state_dict_ema", "ema_state_dict")
# Container keys that hold the raw (non-EMA) weights, in order of preference.
RAW_KEYS = ("model", "state_dict", "net", "module", "params")
# An Orbax checkpoint folder has this file (the tree's metadata) in every layout Orbax writes.
ORBAX_METADATA = "_METADATA"
# flax's save_checkpoint names the folder of each saved step so, inside the folder it was given.
STEP_FOLDER = re.compile(r"checkpoint_(\d+)")
TREE_SEP = "/"  # joins the path of a leaf of an Orbax tree into a state_dict key (flax's convention)


class CheckpointWarning(UserWarning):
    """Something in a checkpoint was skipped or ignored; the message names it."""


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint file and, optionally, which of its weight entries to load.

    Args:
        path: the file (``.pt``, ``.pth``, ``.bin`` or ``.safetensors``), or an Orbax
            checkpoint folder (or the folder holding its ``checkpoint_<step>`` folders).
        entry: the key of the weights inside a container file (``"model"``, ``"ema"``,
            ``"ema_params"``, ...); None: the EMA entry when there is one (see `choose_entry`).
    """

    path: Path
    entry: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))


def as_ref(checkpoint: str | Path | CheckpointRef) -> CheckpointRef:
    return checkpoint if isinstance(checkpoint, CheckpointRef) else CheckpointRef(Path(checkpoint))


def file_sha256(path: str | Path) -> str:
    """`"sha256:<hex>"` of a file; this is `ModelInfo.weights` of a plain state_dict."""
    return "sha256:" + file_digest(path, "sha256")


def folder_sha256(path: str | Path) -> str:
    """``"folder-sha256:<hex>"`` of a folder's files: the sha256 of one line per file,
    ``<sha256 hex of the file>  <its path relative to the folder>\n``, the files in sorted
    order of those POSIX paths. That is sha256sum's output, so it can be checked with
    ``(cd FOLDER && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) | sha256sum``.
    Links and empty folders are not files and are not covered."""
    path = Path(path)
    files = sorted((f.relative_to(path).as_posix(), f) for f in path.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for rel, f in files:
        h.update(f"{file_digest(f, 'sha256')}  {rel}\n".encode())
    return f"folder-sha256:{h.hexdigest()}"


def orbax_folder(path: str | Path) -> Path:
    """The Orbax checkpoint folder `path` names: `path` itself when it holds ``_METADATA``,
    else its ``checkpoint_<step>`` folder of the highest step; a folder with neither is an
    InputError saying what was looked for."""
    path = Path(path)
    if (path / ORBAX_METADATA).is_file():
        return path
    steps = {int(m.group(1)): p for p in path.iterdir()
             if (m := STEP_FOLDER.fullmatch(p.name)) and (p / ORBAX_METADATA).is_file()}
    if steps:
        return steps[max(steps)]
    legacy = sorted(p.name for p in path.iterdir() if STEP_FOLDER.fullmatch(p.name) and p.is_file())
    hint = (f" ({', '.join(legacy[:3])} are flax msgpack files, written without Orbax, which nfebench does not "
            f"read)" if legacy else "")
    raise InputError(f"checkpoint folder {path} holds no checkpoint: it is neither an Orbax checkpoint folder "
                     f"(with {ORBAX_METADATA}) nor a folder holding checkpoint_<step> ones, as flax's "
                     f"save_checkpoint writes them{hint}. Pass the checkpoint folder or file the model was saved to")


def weights_digest(path: str | Path) -> str:
    """A checkpoint's fingerprint without its entry: a file's `file_sha256`, or the
    `folder_sha256` of the Orbax folder a folder path names (`orbax_folder`)."""
    path = Path(path)
    return folder_sha256(orbax_folder(path)) if path.is_dir() else file_sha256(path)


def fingerprint(ref: CheckpointRef, entry: str | None) -> str:
    """`ModelInfo.weights` of weights read from `ref`: the file's sha256 (an Orbax folder's
    `folder_sha256`), plus ``#entry`` when the weights were one entry of a container."""
    return weights_digest(ref.path) + (f"#{entry}" if entry else "")


class _Skipped:
    """Stands in for a class a checkpoint names but nfebench does not trust; absorbs its data."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _torch_load(path: Path, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with `SAFE_GLOBALS` allowed and every other class the file
    names replaced by `_Skipped` (named in a warning); `mmap` maps a zip-format file's tensors
    instead of reading them (torch's legacy format cannot be mapped and is read)."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip-format torch file: torch.load below says what it is
        unsafe, mmap = [], False
    safe_names = {f"{c.__module__}.{c.__qualname__}" for c in SAFE_GLOBALS}
    skipped = sorted(set(unsafe) - safe_names)
    if skipped:
        warnings.warn(f"checkpoint {path}: skipped objects of classes nfebench does not load "
                      f"({', '.join(skipped)}); only tensors and plain metadata are read", CheckpointWarning,
                      stacklevel=3)
    allowed = [*SAFE_GLOBALS, *((_Skipped, name) for name in skipped)]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _load_failure(path: Path, exc: BaseException) -> str:
    """Why torch could not read a file, in one line, without torch's advice to retry with
    ``weights_only=False``: running a file's pickled code is exactly what nfebench never does."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head.startswith((b"PK", b"\x80")):  # neither torch.save's zip nor a pickle's protocol byte
        return f"it is neither a zip-format torch.save file nor a pickle (it starts with {head!r})"
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:  # the weights-only unpickler met something that is not plain data
        core = text.split(marker, 1)[1].strip().split("\n")[0].strip()
        return f"it holds pickled objects other than tensors and plain data ({core})"
    first = text.strip().split("\n")[0] if text.strip() else ""
    return f"{type(exc).__name__}{': ' + first if first else ''}"


def _as_tensor(leaf: Any) -> torch.Tensor:
    """An array leaf of an Orbax tree (numpy, ml_dtypes' bfloat16 or a Python scalar) -> a CPU tensor, exactly."""
    import numpy as np

    a = np.asarray(leaf)
    if not a.ndim:
        return torch.tensor(a.item())
    a = a if a.flags.writeable else a.copy()  # torch shares the memory: no second copy of the weights
    if a.dtype.name == "bfloat16":  # numpy has no bfloat16 of its own: reinterpret the bits
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _flat_tensors(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """A nested tree of dicts, lists and array leaves -> {"a/b/0/c": tensor}; None leaves (an
    optimizer's empty states) are dropped."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    elif tree is None:
        return {}
    else:
        return {prefix: _as_tensor(tree)}
    out: dict[str, torch.Tensor] = {}
    for key, value in items:
        out.update(_flat_tensors(value, f"{prefix}{TREE_SEP}{key}" if prefix else str(key)))
    return out


def read_orbax(path: str | Path) -> dict[str, Any]:
    """The tree of the Orbax checkpoint folder `path` names (`orbax_folder`), restored by
    orbax without a target, as {top-level key: state_dict of its leaves (`TREE_SEP`-joined
    paths)}; a top-level leaf (a TrainState's ``step``) stays one tensor.

    The whole tree is read: for a TrainState that is the weights, their EMA and the
    optimizer's moments, about four times the weights' size in memory while loading.
    """
    folder = orbax_folder(path)
    try:
        import orbax.checkpoint as ocp
    except ImportError as exc:
        raise InputError(f"checkpoint folder {folder} is an Orbax checkpoint; reading it needs orbax-checkpoint "
                         f"({exc.name} is not installed): pip install 'nfebench[jax]' (flax brings it)") from None
    try:
        tree = ocp.PyTreeCheckpointer().restore(folder)
    except Exception as exc:  # orbax raises ValueError, FileNotFoundError, tensorstore errors, ...
        first = str(exc).strip().split("\n")[0]
        raise InputError(f"checkpoint folder {folder} could not be restored by orbax: {type(exc).__name__}"
                         f"{': ' + first if first else ''}") from None
    if not isinstance(tree, Mapping):  # a tree saved without names at its root: one plain state_dict
        return _flat_tensors(tree)
    return {str(k): (_flat_tensors(v) if isinstance(v, (Mapping, list, tuple)) else _as_tensor(v))
            for k, v in tree.items() if v is not None}


def read_file(path: str | Path, *, mmap: bool = False) -> Any:
    """The object a checkpoint file holds, on the CPU, read without running pickled code. A file
    that is not a torch checkpoint or safetensors file (text, random bytes, a pickle of arbitrary
    objects) is one InputError naming the file and what was found. A folder is read as an
    Orbax checkpoint (`read_orbax`). With `mmap` a torch file's tensors are mapped from the
    file, for a caller that copies them out at once."""
    path = Path(path)
    if path.is_dir():
        return read_orbax(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist (pass a path to a saved state_dict)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return _torch_load(path, mmap)
    except Exception as exc:  # torch raises KeyError, UnpicklingError, RuntimeError, ... for non-checkpoints
        raise InputError(f"checkpoint {path} ({path.stat().st_size} bytes) could not be read as a torch.save file "
                         f"of tensors or a .safetensors file: {_load_failure(path, exc)}. Pass the state_dict or training "
                         f"checkpoint file the model was saved to") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def choose_entry(obj: Any, entry: str | None, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The weights in a checkpoint object and the container key they came from (None: the file
    is a plain state_dict).

    A container's weight entries are its values that are state_dicts (dicts of tensors; an
    optimizer state or ``args`` is not). Without `entry`: the only EMA entry, else the only
    entry, else the first of `RAW_KEYS`; several EMA entries must be chosen between.
    """
    if _is_state_dict(obj):
        if entry is not None:
            raise InputError(f"checkpoint {path} is a plain state_dict with no entries; ema={entry!r} "
                             f"names nothing in it (drop ema=)")
        return dict(obj), None
    entries = {k: v for k, v in obj.items() if isinstance(k, str) and _is_state_dict(v)} \
        if isinstance(obj, Mapping) else {}
    if not entries:
        raise InputError(f"checkpoint {path} does not hold a state_dict of tensors")
    if entry is not None:
        if entry not in entries:
            raise InputError(f"checkpoint {path} has no weights entry {entry!r}; its entries: "
                             f"{', '.join(sorted(entries))}")
        return dict(entries[entry]), entry
    emas = [k for k in entries if k.lower() in EMA_KEYS or "ema" in k.lower()]
    if len(emas) == 1:
        return dict(entries[emas[0]]), emas[0]
    if len(emas) > 1:
        raise InputError(f"checkpoint {path} holds several EMA entries ({', '.join(sorted(emas))}); choose one "
                         f"with ema=KEY (--set ema=KEY)")
    if len(entries) == 1:
        (key, sd), = entries.items()
        return dict(sd), key
    for key in RAW_KEYS:
        if key in entries:
            return dict(entries[key]), key
    raise InputError(f"checkpoint {path} holds several weight entries ({', '.join(sorted(entries))}); choose one "
                     f"with ema=KEY (--set ema=KEY)")


def read_checkpoint(checkpoint: str | Path | CheckpointRef, *, mmap: bool = False
                    ) -> tuple[dict[str, torch.Tensor], str]:
    """The chosen state_dict of a checkpoint and its fingerprint (see the module docstring);
    `mmap` as in `read_file`."""
    ref = as_ref(checkpoint)
    sd, entry = choose_entry(read_file(ref.path, mmap=mmap), ref.entry, ref.path)
    return sd, fingerprint(ref, entry)


def read_state_dict(path: str | Path | CheckpointRef) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint's chosen entry, on the CPU (see `read_checkpoint`)."""
    return read_checkpoint(path)[0]


def _shown(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")


def check_fits(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise one InputError naming every missing, unexpected and mis-shaped tensor of `sd`
    against `module`, so a user sees every mismatch at once rather than the first."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    misshaped = sorted(
        f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
        for k in set(own) & set(sd)
        if tuple(sd[k].shape) != tuple(own[k].shape)
    )
    problems = [f"{label} tensors: {_shown(names)}"
                for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
                if names]
    if problems:
        raise InputError(
            f"checkpoint {what} does not match the model configuration: " + "; ".join(problems)
            + ". Check the model id and config overrides (sizes, patch, classes) against the checkpoint."
        )


def load_checkpoint(module: nn.Module, checkpoint: str | Path | CheckpointRef, *,
                    ignore: Callable[[str], bool] | None = None, ignore_reason: str = "",
                    rename: Callable[[str], str] | None = None,
                    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> str:
    """Load a checkpoint into `module` strictly and return its fingerprint.

    Args:
        module: the network; may be on the meta device (loading then materialises it).
        checkpoint: a path or a `CheckpointRef` (which entry of a container to load).
        ignore: keys of the file that the family does not use (for example a training-only
            head); they are dropped and named in a `CheckpointWarning`, with `ignore_reason`.
        rename: maps a file key to the module's key (for example dropping a ``net.`` prefix).
        convert: last transformation of the whole state_dict before the strict check (for
            example dropping learned-sigma output channels); it must say what it changes.

    Every other key must match: missing, unexpected and mis-shaped tensors are all named in
    one InputError.
    """
    ref = as_ref(checkpoint)
    # Mapped, not read: the load below copies each tensor once (a 2.7 GB XL file is then read in
    # one pass instead of two, in a fraction of the time). A module on the meta device takes the
    # tensors themselves (assign), so it gets its own copies, never views of the file.
    sd, weights = read_checkpoint(ref, mmap=True)
    if rename is not None:
        sd = {rename(k): v for k, v in sd.items()}
    if ignore is not None:
        dropped = sorted(k for k in sd if ignore(k))
        if dropped:
            warnings.warn(f"checkpoint {ref.path}: ignored {len(dropped)} tensors ({_shown(dropped)})"
                          + (f": {ignore_reason}" if ignore_reason else ""), CheckpointWarning, stacklevel=2)
            sd = {k: v for k, v in sd.items() if k not in dropped}
    if convert is not None:
        sd = convert(sd)
    check_fits(module, sd, str(ref.path))
    assign = any(p.is_meta for p in module.parameters())
    module.load_state_dict({k: v.clone() for k, v in sd.items()} if assign else sd, strict=True, assign=assign)
    return weights

