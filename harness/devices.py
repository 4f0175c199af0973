"""Which device a command runs on, checked before anything is built, and its name for rows."""

from __future__ import annotations

import torch

from adapters.api.devices import device_name  # noqa: F401  (re-exported: rows name devices through it)
from adapters.api.errors import InputError

DEVICES = ("auto", "cpu", "cuda")  # plus cuda:N


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cpu``, ``cuda``, ``cuda:N``. An unknown name
    or CUDA asked for without a CUDA device is an InputError (exit 2), not a traceback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}, or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"CUDA was asked for (--device {name}) but torch {torch.__version__} sees no CUDA device "
            f"(torch.cuda.is_available() is False); run on a machine with a GPU and a CUDA build of torch, "
            f"or pass --device cpu"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device
