"""`TARFlowConfig`: one TARFlow network and its sampling defaults, read by both backends.

The torch network (`adapters.tarflow.network`), its sampler (`adapters.tarflow.sampler`) and
the Flax port (`adapters.tarflow.jax_network`, `adapters.tarflow.jax_port`) are all built
from it; `check_config` refuses values none of them could build.

Example::

    >>> c = TARFlowConfig(img_size=32, patch_size=4, channels=64, num_blocks=2, layers_per_block=2)
    >>> c.num_patches, c.token_dim
    (64, 48)
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.api.config import option
from adapters.api.errors import InputError
from adapters.api.sampler import check_space


@dataclass(frozen=True)
class TARFlowConfig:
    """One TARFlow network and its sampling defaults; every field can be overridden.

    The first eight fields are the reference ``Model`` constructor's arguments (its
    ``in_channels``, ``img_size``, ``patch_size``, ``channels``, ``num_blocks``,
    ``layers_per_block``, ``nvp``, ``num_classes``), so a reference checkpoint loads with
    the same numbers.
    """

    img_size: int = option(64, "side of the modelled array (pixels, or latent cells for iTARFlow)")
    in_channels: int = option(3, "channels of the modelled array")
    patch_size: int = option(2, "patch side; a token is one patch")
    channels: int = option(768, "transformer width")
    num_blocks: int = option(8, "flow blocks; the sequence direction flips on odd blocks")
    layers_per_block: int = option(8, "transformer layers per flow block")
    nvp: bool = option(True, "affine (scale and shift); False is the volume-preserving shift-only flow")
    num_classes: int = option(1000, "class count; 0 for an unconditional model")
    head_dim: int = option(64, "attention head width (fixed to 64 in the reference)")
    expansion: int = option(4, "MLP expansion (fixed to 4 in the reference)")
    noise_std: float = option(0.05, "training noise sigma; the denoising step uses sigma^2")
    affine_clip: float | None = option(None, "iTARFlow's norm control: clamp (a, b) to [-c, c]; None: no clamp")
    guidance: float = option(0.0, "guidance scale used when generate(guidance=None)")
    denoise: bool = option(True, "run the score-based denoising step by default (the paper's sampler)")
    space: str = option("pixel", "pixel, or latent (SD-VAE)")
    image_size: int | None = option(None, "decoded image side; None means img_size (pixel space)")
    vae: str | None = option(None, "SD-VAE weights (local folder or cached hub id) for latent models")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def token_dim(self) -> int:
        return self.in_channels * self.patch_size**2


def check_config(name: str, c: TARFlowConfig) -> None:
    """Raise InputError naming the first value of `c` that no TARFlow can be built with."""
    positive = ("img_size", "in_channels", "patch_size", "channels", "num_blocks", "layers_per_block",
                "head_dim", "expansion")
    bad = [f"{f}={getattr(c, f)}" for f in positive if getattr(c, f) < 1]
    if bad:
        raise InputError(f"{name}: these config values must be positive integers: {', '.join(bad)}")
    if c.img_size % c.patch_size:
        raise InputError(f"{name}: img_size ({c.img_size}) must be a multiple of patch_size ({c.patch_size})")
    if c.num_patches < 2:
        raise InputError(f"{name}: img_size/patch_size gives {c.num_patches} token(s); at least 2 are needed")
    if c.channels % c.head_dim:
        raise InputError(f"{name}: channels ({c.channels}) must be a multiple of head_dim ({c.head_dim})")
    if c.num_classes < 0 or c.noise_std < 0 or c.guidance < 0:
        raise InputError(f"{name}: num_classes, noise_std and guidance must be >= 0")
    if c.affine_clip is not None and c.affine_clip <= 0:
        raise InputError(f"{name}: affine_clip must be positive or None, got {c.affine_clip}")
    check_space(name, c.space)
    if c.space == "latent" and c.image_size is None:
        raise InputError(f"{name}: a latent-space model needs image_size (the decoded side, e.g. 256)")
