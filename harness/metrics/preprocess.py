"""Images -> Inception input: quantisation to uint8, checks, and the two resize modes.

Modes (named in every result row):

- ``adm`` (default): what ADM's TensorFlow graph and torch-fidelity do: uint8 images as
  float, TF1-compatible bilinear resize to 299 (torch-fidelity's
  ``interpolate_bilinear_2d_like_tensorflow1x``, align_corners=False), then (x - 128) / 128.
- ``clean``: clean-fid's "clean" mode: PIL bicubic resize of each channel in float
  (``cleanfid.resize.build_resizer("clean")``), clipped to [0, 255], then (x - 128) / 128.

Both resizes are the peers' own functions, called, not rewritten.
"""

from __future__ import annotations

import numpy as np
import torch

from adapters.api.errors import InputError

ADM, CLEAN = "adm", "clean"
MODES = (ADM, CLEAN)
INCEPTION_SIZE = 299

# The rule ADM's sampling scripts use (guided-diffusion scripts/image_sample.py):
# ((x + 1) * 127.5).clamp(0, 255).to(uint8), truncating. DiT's sample.py instead rounds:
# clamp(127.5 * x + 128, 0, 255).to(uint8); the two differ by one level on about half
# the pixels, which moves FID slightly, so the harness names its rule in every row.
QUANTIZATION = "adm: ((x+1)*127.5).clamp(0,255).to(uint8)"


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (N, 3, H, W) float -> uint8 (N, 3, H, W), with ADM's rule (truncation).

    Example::

        >>> quantize(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)).flatten().tolist()
        [0, 127, 255]
    """
    if not images.is_floating_point():
        raise InputError(f"quantize expects float images in [-1, 1], got {images.dtype}")
    return ((images + 1) * 127.5).clamp(0, 255).to(torch.uint8)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"unknown preprocessing mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def as_nchw_uint8(images, what: str = "images") -> torch.Tensor:
    """Check and convert a uint8 image batch to a torch uint8 (N, 3, H, W) tensor.

    numpy arrays are read as NHWC (the ADM sample-batch layout, ``arr_0``); torch tensors as
    NCHW. Anything but uint8 with 3 channels is refused with a message saying how to fix it.
    """
    is_numpy = isinstance(images, np.ndarray)
    layout = "NHWC" if is_numpy else "NCHW"
    dtype = images.dtype
    if dtype != (np.uint8 if is_numpy else torch.uint8):
        hint = ""
        floating = np.issubdtype(dtype, np.floating) if is_numpy else images.is_floating_point()
        size = images.size if is_numpy else images.numel()
        if floating and size:
            lo, hi = float(images.min()), float(images.max())
            hint = (f" (values in [{lo:.3g}, {hi:.3g}]; images in [-1, 1] convert with "
                    f"((x + 1) * 127.5).clip(0, 255).astype(uint8))")
        raise InputError(f"{what}: expected uint8 images, got {dtype}{hint}")
    if images.ndim != 4:
        raise InputError(f"{what}: expected a {layout} batch (4 dimensions), got shape {tuple(images.shape)}")
    channels = images.shape[3] if is_numpy else images.shape[1]
    if channels != 3:
        raise InputError(f"{what}: expected 3 colour channels in {layout} layout, got shape {tuple(images.shape)}")
    if is_numpy:
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, 3, H, W)
    return images


def inception_input(images: torch.Tensor, mode: str = ADM, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> float32 (N, 3, 299, 299) in [-1, 1) on `device`.

    Example::

        x = inception_input(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "adm")   # (2, 3, 299, 299)
    """
    check_mode(mode)
    if mode == ADM:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        x = images.to(device, torch.float32)  # (N, 3, H, W) in [0, 255]
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), align_corners=False)
    else:
        from cleanfid.resize import build_resizer

        resize = build_resizer("clean")  # HWC uint8 -> HWC float32 in [0, 255]
        hwc = images.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)
        x = torch.from_numpy(np.stack([resize(img) for img in hwc])).permute(0, 3, 1, 2)  # (N, 3, 299, 299)
        x = x.to(device, torch.float32)
    return (x - 128) / 128
