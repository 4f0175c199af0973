"""Sets of images as an evaluation reads them: a folder of images, an ``.npz`` of uint8 NHWC
images in ``arr_0`` (an ADM sample batch, read in a stream), or a statistics ``.npz`` (ADM
reference batch, clean-fid or nfebench statistics; see `harness.metrics.fid`).

`open_source` picks by what the path holds; an image source gives uint8 (B, H, W, 3) batches
through ``batches(batch_size)`` and says its ``count``.

Example::

    source = open_source("samples.npz")          # NpzImages: arr_0 read batch by batch
    next(source.batches(64)).shape               # (64, 256, 256, 3)
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from adapters.api.errors import InputError
from harness import results
from harness.evaluate.config import MetricWarning
from harness.metrics.fid import ReferenceStats, is_stats_file, load_stats
from harness.metrics.preprocess import as_nchw_uint8

IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}  # as clean-fid


class ImageFolder:
    """Images in a folder (recursively, sorted by path), as uint8 NHWC batches; all one size.

    Read as clean-fid and torch-fidelity read them (PIL, converted to RGB), except:
    16-bit greyscale images (which PIL's RGB conversion clips at 255) are read at full depth
    and scaled to 8 bits by their high byte, the rule PIL itself applies to 16-bit colour PNGs;
    32-bit integer and float images are refused. Images with an alpha channel lose it (the RGB
    values are used as stored); both are said once per folder (`MetricWarning`).
    """

    SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
    ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")

    def __init__(self, path: Path):
        self.path = path
        self.files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.files:
            raise InputError(f"{path}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.count = len(self.files)

    def _read(self, file: Path, seen: dict[str, list[Path]]) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(file) as img:
                img.load()
                if img.mode in self.SIXTEEN_BIT:
                    seen["16-bit"].append(file)
                    grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)  # (H, W)
                    return np.repeat(grey[:, :, None], 3, axis=2)  # (H, W, 3)
                if img.mode in ("I", "F"):
                    raise InputError(f"{file} is a {'32-bit integer' if img.mode == 'I' else 'floating-point'} "
                                     f"image (PIL mode {img.mode}), which has no standard 8-bit reading; save it "
                                     f"as an 8-bit (or 16-bit) PNG")
                if img.mode in self.ALPHA or (img.mode == "P" and "transparency" in img.info):
                    seen["alpha"].append(file)
                return np.asarray(img.convert("RGB"))  # (H, W, 3) uint8, as clean-fid and torch-fidelity read
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read image {file}: {exc}") from exc

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        shape = None
        seen: dict[str, list[Path]] = {"16-bit": [], "alpha": []}
        for start in range(0, self.count, batch_size):
            files = self.files[start:start + batch_size]
            imgs = [self._read(f, seen) for f in files]
            for f, img in zip(files, imgs):
                shape = shape or img.shape
                if img.shape != shape:
                    raise InputError(f"{f} is {img.shape[1]}x{img.shape[0]}, the folder's first image is "
                                     f"{shape[1]}x{shape[0]}; all images of a folder must have one size")
            yield np.stack(imgs)  # (B, H, W, 3)
        if seen["16-bit"]:
            warnings.warn(f"{self.path}: {len(seen['16-bit'])} 16-bit greyscale image(s) (first: "
                          f"{seen['16-bit'][0].name}) read at full depth and scaled to 8 bits by their high byte "
                          f"(v >> 8, as PIL reads 16-bit colour PNGs)", MetricWarning, stacklevel=2)
        if seen["alpha"]:
            warnings.warn(f"{self.path}: {len(seen['alpha'])} image(s) with an alpha channel (first: "
                          f"{seen['alpha'][0].name}); the alpha channel is dropped and the RGB values are used as "
                          f"stored, not composited, as clean-fid and torch-fidelity read them", MetricWarning,
                          stacklevel=2)


class NpzImages:
    """``arr_0`` of an .npz (uint8 NHWC, ADM's sample-batch layout), read batch by batch from
    the zip member so 50,000 images never sit in memory."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with zipfile.ZipFile(path) as z, z.open("arr_0.npy") as f:
                self.shape, self.dtype = _read_npy_header(f, path)
        except KeyError as exc:
            raise InputError(f"{path}: an image .npz needs the array arr_0 (uint8 NHWC)") from exc
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
        # Check dtype, rank and channels on an empty array of the stored layout.
        as_nchw_uint8(np.zeros((0, *self.shape[1:]), self.dtype), what=f"{path} arr_0")
        self.count = int(self.shape[0])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        per_image = int(np.prod(self.shape[1:]))
        with zipfile.ZipFile(self.path) as z, z.open("arr_0.npy") as f:
            _read_npy_header(f, self.path)
            for start in range(0, self.count, batch_size):
                n = min(batch_size, self.count - start)
                buf = f.read(n * per_image)
                if len(buf) != n * per_image:
                    raise InputError(f"{self.path}: arr_0 is truncated at image {start}")
                yield np.frombuffer(bytearray(buf), np.uint8).reshape(n, *self.shape[1:])  # (B, H, W, 3), writable


def _read_npy_header(f, path: Path) -> tuple[tuple, np.dtype]:
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise InputError(f"{path}: unsupported .npy version {version} for arr_0")
    shape, fortran, dtype = read(f)
    if fortran:
        raise InputError(f"{path}: arr_0 is stored in Fortran order; save it C-contiguous")
    return shape, dtype


def open_source(path: str | Path) -> ImageFolder | NpzImages | ReferenceStats:
    """A folder of images, an image .npz (``arr_0``) or a statistics .npz, by what the path holds."""
    path = Path(path)
    if path.is_dir():
        return ImageFolder(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.suffix != ".npz":
        raise InputError(f"{path}: expected a folder of images or an .npz file")
    if is_stats_file(path):
        return load_stats(path)
    return NpzImages(path)



def source_digest(source) -> str:
    """What identifies a reference for the work-dir manifest: a file's sha256, or a folder's
    sorted file names and sizes (hashing 50,000 images would cost more than it protects)."""
    if isinstance(source, ImageFolder):
        h = hashlib.sha256()
        for f in source.files:
            h.update(f"{f.relative_to(source.path)}:{f.stat().st_size}\n".encode())
        return f"folder-sha256:{h.hexdigest()}"
    return f"sha256:{results.file_digest(source.path, 'sha256')}"
