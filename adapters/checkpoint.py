"""Checkpoint files: read a state_dict, fingerprint it, load it strictly with errors that name tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from harness.errors import InputError
from harness.results import file_digest


def file_sha256(path: str | Path) -> str:
    """`"sha256:<hex>"` of a file; this is `ModelInfo.weights`."""
    return "sha256:" + file_digest(path, "sha256")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a torch (`.pt`, `.pth`, `.bin`) or safetensors file, on the CPU.

    A file holding ``{"model": state_dict}`` or ``{"state_dict": ...}`` is unwrapped, as
    training scripts often save that.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist (pass a path to a saved state_dict)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say which
        raise InputError(f"checkpoint {path} could not be read as a state_dict: {exc}") from exc
    for key in ("model", "state_dict", "ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"checkpoint {path} does not hold a state_dict of tensors")
    return sd


def load_checkpoint(module: nn.Module, path: str | Path) -> str:
    """Load `path` into `module` strictly and return its fingerprint.

    Missing, unexpected and mis-shaped tensors are all named in one InputError, so a user
    sees every mismatch at once rather than the first.
    """
    sd = read_state_dict(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    misshaped = sorted(
        f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
        for k in set(own) & set(sd)
        if tuple(sd[k].shape) != tuple(own[k].shape)
    )
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if names:
            shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
            problems.append(f"{label} tensors: {shown}")
    if problems:
        raise InputError(
            f"checkpoint {path} does not match the model configuration: " + "; ".join(problems)
            + ". Check the config overrides (sizes, patch, classes) against the checkpoint."
        )
    module.load_state_dict(sd, strict=True, assign=any(p.is_meta for p in module.parameters()))
    return file_sha256(path)
