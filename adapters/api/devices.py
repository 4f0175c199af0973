"""Device names and the JAX devices: how rows name the hardware they ran on, on either back-end.

Shared by the torch and JAX samplers and by the timing runners, so a torch row and a JAX row of
the same CPU name it the same way (and their calibrations compare).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from adapters.api.errors import InputError

PLATFORMS = ("auto", "cpu", "gpu", "tpu")  # JAX platforms a sampler may ask for
ALLOW_CPU_ENV = "NFEBENCH_ALLOW_CPU"  # "1": a sweep that asks for a TPU may run on the CPU instead


def device_name(device: torch.device) -> str:
    """The accelerator's name (CUDA), else the CPU model from /proc/cpuinfo or platform, followed by
    the vector instruction set torch's kernels dispatch to and, where /proc/cpuinfo gives them, the
    CPU family and model numbers: "AMD EPYC (AVX2, family 25 model 1)". A virtual machine's model name
    can be that short, and two CPUs behind it round differently: the mini track's seeded training gave
    other weights, and FIDs 3 apart, on two "AMD EPYC" machines. So rows of one name compare."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "cpu"
    detail = [torch.backends.cpu.get_cpu_capability()]  # "AVX2", "AVX512", "DEFAULT", ...
    if "cpu family" in fields and "model" in fields:
        detail.append(f"family {fields['cpu family']} model {fields['model']}")
    return f"{name} ({', '.join(detail)})"


def require_jax():
    """Import jax, or fail with the extra to install."""
    try:
        import flax  # noqa: F401  (the ports are Flax modules)
        import jax
    except ImportError as exc:
        raise InputError(
            f"--backend jax needs JAX and Flax ({exc.name} is not installed): pip install 'nfebench[jax]' "
            f"(on a TPU VM also: pip install 'jax[tpu]')") from None
    return jax


def jax_devices(platform: str = "auto") -> list:
    """The local devices of `platform` ("auto": JAX's default backend). Asking for an
    accelerator that is absent is an InputError, unless $NFEBENCH_ALLOW_CPU=1, which
    falls back to the CPU (the tests run the TPU path that way)."""
    jax = require_jax()
    if platform not in PLATFORMS:
        raise InputError(f"unknown JAX device {platform!r}; choose one of {', '.join(PLATFORMS)}")
    if platform == "auto":
        return jax.local_devices()
    try:
        devices = jax.local_devices(backend=platform)
    except RuntimeError:
        devices = []
    if devices:
        return devices
    if os.environ.get(ALLOW_CPU_ENV) == "1":
        return jax.local_devices(backend="cpu")
    raise InputError(
        f"JAX sees no {platform.upper()} (its devices: {', '.join(sorted({d.platform for d in jax.devices()}))}); "
        f"run on a {platform.upper()} host with jax[{platform}] installed, or set {ALLOW_CPU_ENV}=1 to run the same "
        f"path on the CPU (timings are then CPU timings, and the rows say so)")


def jax_device_name(device) -> str:
    """What rows call a JAX device: its `device_kind` ("TPU v4", "NVIDIA H100 80GB HBM3"),
    or for a CPU the processor model, as the torch rows name it (so calibrations compare)."""
    if device.platform == "cpu":
        return device_name(torch.device("cpu"))
    return str(device.device_kind)
