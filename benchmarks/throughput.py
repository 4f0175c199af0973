"""What the feature-extraction benchmarks share: images per second of a pipeline, timed whole."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch


def images_per_s(fn: Callable[[Any], Any], images: Any, batch_size: int, device: torch.device) -> float:
    """Images per second of `fn` over `images` (a tensor or array, first axis the image) in batches,
    with the device synchronised before and after so queued GPU work is counted."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for lo in range(0, len(images), batch_size):
        fn(images[lo:lo + batch_size])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(images) / (time.perf_counter() - t0)
