"""Shared torch building blocks for the adapters."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, T, C*p*p) with T = (H/p)*(W/p), token features channel-major
    (the layout of `F.unfold`, which apple/ml-tarflow uses; every adapter shares it so
    BiFlow's hidden states line up with its TARFlow teacher's tokens)."""
    return F.unfold(x, patch_size, stride=patch_size).transpose(1, 2)


def unpatchify(tokens: torch.Tensor, patch_size: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, T, C*p*p) -> (N, C, H, W); the inverse of `patchify`."""
    return F.fold(tokens.transpose(1, 2), size, patch_size, stride=patch_size)
