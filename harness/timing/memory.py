"""Peak memory over a measured region: CUDA peak allocated, or CPU peak resident growth.

- CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, so the figure
  is the most memory held by tensors at any moment of the region, weights included
  (what a batch size needs on that card). When other models share the device (the two
  models of a pair are built together), pass ``own_bytes``, what the region's own model
  holds: the figure is then that plus the region's growth over what was allocated at its
  start, so another model's weights do not count.
- CPU: the growth of the process's peak resident set over its resident set at the start.
  Linux keeps the peak in ``VmHWM`` and resets it to the current size when ``5`` is
  written to ``/proc/self/clear_refs``; without that interface (macOS, Windows) the
  figure is None and no row is written, rather than a lifetime peak passed off as this
  region's. Before the reset, glibc's ``malloc_trim`` hands freed heap memory back to the
  system: otherwise memory freed by earlier calls stays resident, the region reuses it,
  and the growth reads near zero (a B/2 generator at batch 1: 7 MiB untrimmed, 19 MiB
  trimmed).

Example::

    with PeakMemory("cpu") as mem:
        model(x)
    mem.mb      # e.g. 812.4
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # "VmHWM:   123456 kB"
    raise OSError(f"{field} not in {_STATUS}")


def _malloc_trim() -> None:
    """Return freed heap memory to the system (glibc only; elsewhere nothing to do)."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _reset_rss_peak() -> int | None:
    """Reset VmHWM to the current RSS and return that RSS in kB; None where unsupported."""
    _malloc_trim()
    try:
        _CLEAR_REFS.write_text("5")
        return _status_kb("VmRSS")
    except OSError:
        return None


class PeakMemory:
    """Context manager; `mb` holds the region's peak in MiB (None where unmeasurable).

    Args:
        device: where the region's work runs.
        own_bytes: CUDA only: the memory the region's model holds itself (weights, decoder), when
            other models' tensors are on the device too; None counts everything allocated.
    """

    def __init__(self, device: torch.device | str, own_bytes: int | None = None):
        self.device = torch.device(device)
        self.own_bytes = own_bytes
        self.mb: float | None = None
        self._base_kb: int | None = None
        self._start_bytes = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self._base_kb = _reset_rss_peak()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            if self.own_bytes is not None:
                peak = self.own_bytes + peak - self._start_bytes
            self.mb = peak / 2**20
        elif self._base_kb is not None:
            self.mb = max(_status_kb("VmHWM") - self._base_kb, 0) / 1024
