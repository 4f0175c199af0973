"""Peak memory over a region: CPU peak resident growth, and the CUDA arithmetic on fake allocator counters."""

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


class FakeCuda:
    """torch.cuda's allocator counters, moved by hand."""

    def __init__(self, allocated):
        self.allocated, self.peak = allocated, allocated

    def install(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: setattr(self, "peak",
                                                                                                self.allocated))
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)

    def work(self, transient):
        self.peak = max(self.peak, self.allocated + transient)


def test_cuda_peak_counts_everything_allocated_or_only_the_models_own(monkeypatch):
    mib = 2**20
    cuda = FakeCuda(allocated=3000 * mib)  # two models built: 1000 MiB this one's, 2000 MiB the other's
    cuda.install(monkeypatch)
    with PeakMemory("cuda") as alone:
        cuda.work(500 * mib)
    assert alone.mb == 3500  # everything held at the peak, as for a model built alone
    with PeakMemory("cuda", own_bytes=1000 * mib) as shared:
        cuda.work(500 * mib)
    assert shared.mb == 1500  # its own 1000 MiB and the call's 500, not the other model's weights
