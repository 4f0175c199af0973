"""Dense peak FLOP/s per accelerator and dtype, FLOPs per image, and model FLOP utilisation.

MFU = (FLOPs the model needs per image x images per second) / the device's dense peak.
FLOPs count a multiply-add as 2, as `ModelInfo.gflops` does. Peaks are the vendors'
data-sheet figures without structured sparsity (NVIDIA prints the sparse figure, twice
the dense one, with an asterisk). CPUs have no entry: their peak depends on the core
count, clock and vector units in use, so MFU is left out there rather than guessed.
A decoder's cost comes from its family's spec (`adapters.api.sampler.DecoderInfo`,
``get_spec(id).decoder``), never from a family module.

Example::

    peak = peak_flops("NVIDIA H100 80GB HBM3", "bfloat16")      # 989.5e12
    mfu(flops_per_batch=4 * 68e9, seconds_per_batch=0.002, peak=peak)
"""

from __future__ import annotations

import re

from adapters.api.sampler import DecoderInfo, ModelInfo

T = 1e12

# Dense peak FLOP/s per chip. "tf32" is float32 matmuls on tensor cores, used when torch
# allows it (torch.backends.cuda.matmul.allow_tf32); otherwise float32 runs on the CUDA cores.
# Sources: NVIDIA H100 / H200 / A100 data sheets; Google Cloud TPU system-architecture pages
# (v4: 275, v5e: 197, v5p: 459 bf16 TFLOPS per chip). TPUs publish no float32 peak.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bfloat16": 989.5 * T, "float16": 989.5 * T, "tf32": 494.5 * T, "float32": 67 * T},
    "H100 PCIe": {"bfloat16": 756.5 * T, "float16": 756.5 * T, "tf32": 378 * T, "float32": 51 * T},
    "H100 NVL": {"bfloat16": 835.5 * T, "float16": 835.5 * T, "tf32": 417.5 * T, "float32": 60 * T},
    "H200 SXM": {"bfloat16": 989.5 * T, "float16": 989.5 * T, "tf32": 494.5 * T, "float32": 67 * T},
    "H200 NVL": {"bfloat16": 835.5 * T, "float16": 835.5 * T, "tf32": 417.5 * T, "float32": 60 * T},
    "A100": {"bfloat16": 312 * T, "float16": 312 * T, "tf32": 156 * T, "float32": 19.5 * T},
    "TPU v4": {"bfloat16": 275 * T},
    "TPU v5e": {"bfloat16": 197 * T},
    "TPU v5p": {"bfloat16": 459 * T},
}

# Device names as torch.cuda.get_device_name / jax's device_kind print them -> table key.
# First match wins, so the specific names come before the general ones.
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"\bH200\b.*\bNVL\b", "H200 NVL"),
    (r"\bH200\b", "H200 SXM"),
    (r"\bH100\b.*\bNVL\b", "H100 NVL"),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe"),
    (r"\bH100\b", "H100 SXM"),  # "NVIDIA H100 80GB HBM3" is the SXM part
    (r"\bA100\b", "A100"),
    (r"\bTPU v5 ?(lite|e)\b", "TPU v5e"),
    (r"\bTPU v5p?\b", "TPU v5p"),  # jax calls a v5p "TPU v5"
    (r"\bTPU v4\b", "TPU v4"),
)


def device_key(device_name: str) -> str | None:
    """The `PEAK_FLOPS` key of a device name, or None for a device not in the table."""
    for pattern, key in _NAME_PATTERNS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return key
    return None


def peak_flops(device_name: str, dtype: str, *, tf32: bool = False) -> float | None:
    """Dense peak FLOP/s of `device_name` in `dtype` ("bfloat16", "float16", "float32"),
    or None where unknown (CPUs, float32 on TPUs). `tf32`: float32 matmuls run as TF32."""
    key = device_key(device_name)
    if key is None:
        return None
    if dtype == "float32" and tf32:
        dtype = "tf32"
    return PEAK_FLOPS[key].get(dtype)


def flops_per_image(info: ModelInfo, decoder: DecoderInfo | None = None, *, generator: bool = True,
                    decode: bool = False) -> float:
    """FLOPs one image costs: `info.gflops` (one network evaluation) x `info.nfe`, plus one
    decode by `decoder` (its `DecoderInfo.gflops` at `info.image_size`) when `decode` is on.

    Args:
        info: the generator.
        decoder: the decoder the model decodes with (the family spec's ``decoder``); None: none
            (pixel space), a decode then costs nothing.
        generator: count the generator (False: the decoder alone).
        decode: count one decode.

    Example::

        sd_vae = DecoderInfo("sd-vae", 49_490_199, 622.2)
        flops_per_image(info, sd_vae, generator=False, decode=True)  # 622.2e9 for a 256 px model
    """
    total = info.gflops * 1e9 * info.nfe if generator else 0.0
    if decode and decoder is not None:
        total += decoder.gflops(info.image_size) * 1e9
    return total


def mfu(flops_per_batch: float, seconds_per_batch: float, peak: float) -> float:
    """Achieved FLOP/s over the peak: 1.0 means the device ran at its data-sheet peak."""
    return flops_per_batch / seconds_per_batch / peak
