"""Peak memory over a region: CPU peak resident growth. (The CUDA branch needs a GPU: untested here.)"""

import os
from pathlib import Path

import pytest
import torch

from harness.timing.memory import PeakMemory

linux_peak = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                reason="peak RSS reset needs Linux /proc/self/clear_refs")


@linux_peak
def test_cpu_peak_growth_sees_a_freed_allocation():
    with PeakMemory("cpu") as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del x
    assert 60 < mem.mb < 80


@linux_peak
def test_cpu_peak_growth_of_nothing_is_small():
    big = torch.ones(64 * 2**20 // 4)  # resident before the region: not growth
    with PeakMemory("cpu") as mem:
        big.add_(1)
    assert mem.mb < 8


def test_no_figure_without_the_proc_interface(monkeypatch):
    import harness.timing.memory as memory

    monkeypatch.setattr(memory, "_CLEAR_REFS", Path("/nonexistent/clear_refs"))
    with PeakMemory("cpu") as mem:
        pass
    assert mem.mb is None
