"""Datasets that install with a package: nothing is downloaded at run time.

The mini track (`harness.track`) trains on scikit-learn's handwritten digits
(`sklearn.datasets.load_digits`): 1,797 8x8 greyscale images in 10 classes, 17 grey levels
(0..16), stored inside the scikit-learn wheel (`sklearn/datasets/data/digits.csv.gz`). It is
chosen over patches of scikit-image's sample photographs because it has real class labels
(so class conditioning and guidance mean something), its images are whole objects rather
than arbitrary crops, and at 8x8 a flow, a one-pass student and a flow-matching model all
train to recognisable samples in minutes on two CPU cores.

Images are replicated to 3 channels (RGB) so every model and the Inception network see the
same 3-channel images the rest of nfebench uses, and mapped to [-1, 1] so that ADM's uint8
rule ``((x + 1) * 127.5)`` gives back exactly ``round(level * 255 / 16)``.

Example::

    >>> split = load_digits_split()
    >>> split.train_x.shape, split.ref_x.shape, int(split.train_y.max())
    (torch.Size([1297, 3, 8, 8]), torch.Size([500, 3, 8, 8]), 9)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adapters.api.errors import InputError
from harness.metrics.preprocess import quantize
from harness.results import atomic_write_npz

DIGITS = "digits"
DIGITS_LEVELS = 16  # grey levels run 0..16
DIGITS_HELD_OUT = 500  # held-out reference images; the other 1,297 train
DIGITS_SPLIT_SEED = 0  # the split is a fixed permutation: the same on every machine


@dataclass(frozen=True)
class Split:
    """Train and held-out reference images, (N, 3, H, W) float32 in [-1, 1], with labels (N,) int64."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    ref_x: torch.Tensor
    ref_y: torch.Tensor
    num_classes: int

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


def load_digits_split(held_out: int = DIGITS_HELD_OUT, seed: int = DIGITS_SPLIT_SEED) -> Split:
    """scikit-learn's digits, split by a seeded permutation into train and held-out sets.

    Args:
        held_out: images kept out of training, the reference that FID is measured against.
        seed: seed of the permutation.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # a dependency of nfebench, but say what to do if it is missing
        raise InputError("the mini track's dataset needs scikit-learn: pip install scikit-learn") from exc
    digits = load_digits()
    levels = torch.from_numpy(digits.images.astype(np.float32))  # (1797, 8, 8) in 0..16
    labels = torch.from_numpy(digits.target.astype(np.int64))  # (1797,)
    if not 0 < held_out < len(labels):
        raise InputError(f"held_out must lie in (0, {len(labels)}), got {held_out}")
    x = (levels / (DIGITS_LEVELS / 2) - 1).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # (N, 3, 8, 8)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    ref, train = order[:held_out], order[held_out:]
    return Split(DIGITS, x[train], labels[train], x[ref], labels[ref], num_classes=10)


def to_uint8_nhwc(x: torch.Tensor) -> np.ndarray:
    """Images (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3) by ADM's rule, as samples are quantised."""
    return quantize(x).permute(0, 2, 3, 1).contiguous().numpy()


def write_reference(split: Split, path: str | Path) -> Path:
    """The held-out images as an ADM-layout image .npz (``arr_0`` uint8 NHWC, ``arr_1`` labels),
    which `nfebench eval --ref` and `nfebench ref-stats` read."""
    path = Path(path)
    atomic_write_npz(path, arr_0=to_uint8_nhwc(split.ref_x), arr_1=split.ref_y.numpy())
    return path
