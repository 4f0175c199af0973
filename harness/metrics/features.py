"""One interface for the networks that turn images into feature vectors.

A `FeatureExtractor` takes uint8 images (N, 3, H, W), does its own preprocessing, and
returns named feature tensors, one row per image. Each extractor declares the features it
gives (`FEATURES`: name -> dimension) and says in `network` which network and which weights
stand behind them, so every number computed from them can name its source.

Extractors are listed in `EXTRACTORS` (name -> "module:Class", imported only when used) and
features in `FEATURES` (feature -> extractor, dimension). Another encoder (CLIP, say) is one
module with a `FeatureExtractor` subclass, one line in each table here, and one line in
`harness.evaluate.FRECHET` for the Frechet distance on its features.

Example::

    ext = load_extractor("inception", device="cpu", mode="adm")
    out = ext(torch.zeros(4, 3, 64, 64, dtype=torch.uint8), {"pool"})
    out["pool"].shape                      # (4, 2048)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar, Collection

import torch

from adapters.api.errors import InputError
from harness.metrics.preprocess import as_nchw_uint8

# extractor name -> "module:Class"
EXTRACTORS: dict[str, str] = {
    "inception": "harness.metrics.inception:InceptionFeatures",
    "dinov2": "harness.metrics.dinov2:DINOv2Features",
}
# feature name -> (extractor name, dimension); names are unique across extractors
FEATURES: dict[str, tuple[str, int]] = {
    "pool": ("inception", 2048),  # pool_3 (FID, IS via logits, precision/recall, density/coverage, KID)
    "spatial": ("inception", 2023),  # mixed_6/conv, first 7 channels (sFID)
    "logits": ("inception", 1008),  # pool_3 times the softmax weights (IS)
    "dinov2": ("dinov2", 1024),  # DINOv2 ViT-L/14 class token after the final norm (FD-DINOv2)
}


class Unavailable(Exception):
    """An extractor cannot be built here (its weights are missing); the message says where to put them."""


class FeatureExtractor(ABC):
    """A network that maps uint8 images to named feature vectors.

    Subclasses set `NAME` and `FEATURES` (feature -> dimension), set `self.network` (the
    network and its weights, e.g. ``"dinov2_vitl14 (sha256:d5383ea8...)"``) and implement
    `from_options` (find the weights; raise `Unavailable` if they are not there) and `extract`.
    `available` lists the features this instance can give (Inception gives its IS logits only
    when the softmax weights were found); `weights_warning` is a caveat about the weights found.

    Example::

        class Clip(FeatureExtractor):
            NAME, FEATURES = "clip", {"clip": 768}

            def extract(self, images, wanted):
                return {"clip": self.model.encode_image(self.preprocess(images))}   # (N, 768)
    """

    NAME: ClassVar[str]
    FEATURES: ClassVar[dict[str, int]]
    network: str
    device: torch.device
    weights_warning: str | None = None

    @classmethod
    @abstractmethod
    def from_options(cls, device: str | torch.device, options: Any, wanted: frozenset[str]) -> "FeatureExtractor":
        """The extractor for `wanted` features with the weights `options` point to
        (`harness.evaluate.MetricOptions`), or `Unavailable` saying what is missing."""

    @property
    def available(self) -> frozenset[str]:
        return frozenset(self.FEATURES)

    def unavailable_message(self, feature: str) -> str:
        """Why `feature` (not in `available`) cannot be computed, and how to enable it."""
        return f"{self.NAME} cannot give {feature} here"

    def describe(self, feature: str) -> str:
        """The network and weights behind `feature`, for result rows and ``--json``."""
        return self.network

    @abstractmethod
    def extract(self, images: torch.Tensor, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        """Features `wanted` (a subset of `available`) of uint8 images (N, 3, H, W): each (N, dim)."""

    def __call__(self, images, wanted: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """Features of uint8 images (torch NCHW or numpy NHWC); all available ones by default."""
        wanted = self.available if wanted is None else frozenset(wanted)
        missing = wanted - self.available
        if missing:
            raise InputError(f"{self.NAME} does not give the feature(s) {', '.join(sorted(missing))}; it gives "
                             f"{', '.join(sorted(self.available))}")
        return self.extract(as_nchw_uint8(images), wanted)


def extractor_class(name: str) -> type[FeatureExtractor]:
    if name not in EXTRACTORS:
        raise InputError(f"unknown feature extractor {name!r}; known: {', '.join(EXTRACTORS)}")
    module, attr = EXTRACTORS[name].split(":")
    return getattr(import_module(module), attr)


def load_extractor(name: str, **options: Any) -> FeatureExtractor:
    """Build the extractor `name` with its options (device, mode, weight paths)."""
    return extractor_class(name)(**options)


def extractor_of(feature: str) -> str:
    """Name of the extractor that gives `feature`."""
    if feature not in FEATURES:
        raise InputError(f"unknown feature {feature!r}; known: {', '.join(FEATURES)}")
    return FEATURES[feature][0]


def extract_all(extractors: dict[str, FeatureExtractor], images, wanted: Collection[str]) -> dict[str, torch.Tensor]:
    """Every feature in `wanted`, each from its own extractor in `extractors`, on one batch.

    Example::

        f = extract_all({"inception": inc, "dinov2": dino}, images, {"pool", "dinov2"})
    """
    images = as_nchw_uint8(images)
    out: dict[str, torch.Tensor] = {}
    for name, extractor in extractors.items():
        mine = frozenset(f for f in wanted if extractor_of(f) == name)
        if mine:
            out.update(extractor(images, mine))
    return out


def hub_checkpoint(filename: str, explicit: str | Path | None, option: str) -> Path | None:
    """A weight file a feature network needs: `explicit` (given with `option`; it must exist),
    else ``$TORCH_HOME/hub/checkpoints/<filename>``, where torch.hub keeps it, if it is there,
    else None. Nothing is ever downloaded."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise InputError(f"{option} {path} does not exist")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return path if path.is_file() else None
