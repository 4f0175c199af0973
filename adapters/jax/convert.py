"""torch ``state_dict`` -> Flax parameters, with every missing, unexpected or mis-shaped
tensor named in one error (as `adapters.api.checkpoint.load_checkpoint` does for torch).

A port walks the torch names it needs through a `StateDictReader`, giving each tensor's
expected torch shape; `finish()` then raises one InputError listing every problem, or
returns nothing when the whole state_dict was used.

Example::

    r = StateDictReader(net.state_dict(), "biflow-b2")
    params = {"x_embedder": r.linear("x_embedder", 16, 768)}
    r.finish()
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from adapters.api.errors import InputError


def to_numpy(t: Any) -> np.ndarray:
    """A torch tensor (any device or dtype, bf16 included) or array -> float32/int numpy array."""
    if hasattr(t, "detach"):  # torch.Tensor, without importing torch here
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        return t.numpy()
    a = np.asarray(t)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


class StateDictReader:
    """Reads tensors out of a torch state_dict by name, checking shapes, recording problems."""

    def __init__(self, state_dict: Mapping[str, Any], what: str, *, ignore: tuple[str, ...] = ()):
        """`what` names the model in errors; keys starting with any of `ignore` (derived
        buffers such as an attention mask) are allowed to be present and unused."""
        self.state_dict = state_dict
        self.what = what
        self.ignore = ignore
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.misshaped: list[str] = []

    def get(self, key: str, *shape: int) -> np.ndarray:
        """The tensor `key` as numpy, expected to have torch shape `shape`; a missing or
        mis-shaped tensor is recorded and zeros of the expected shape returned, so
        conversion goes on and every problem is reported at once."""
        if key not in self.state_dict:
            self.missing.append(key)
            return np.zeros(shape, np.float32)
        self.used.add(key)
        a = to_numpy(self.state_dict[key])
        if tuple(a.shape) != tuple(shape):
            self.misshaped.append(f"{key} (file {tuple(a.shape)}, expected {tuple(shape)})")
            return np.zeros(shape, np.float32)
        return a

    def linear(self, prefix: str, in_features: int, out_features: int, *, bias: bool = True) -> dict[str, np.ndarray]:
        """torch ``nn.Linear`` (weight (out, in)) -> Flax ``Dense`` params (kernel (in, out))."""
        out = {"kernel": self.get(f"{prefix}.weight", out_features, in_features).T}
        if bias:
            out["bias"] = self.get(f"{prefix}.bias", out_features)
        return out

    def norm(self, prefix: str, features: int, *, bias: bool = True) -> dict[str, np.ndarray]:
        """torch LayerNorm / GroupNorm / RMSNorm (weight, bias) -> Flax (scale, bias)."""
        out = {"scale": self.get(f"{prefix}.weight", features)}
        if bias:
            out["bias"] = self.get(f"{prefix}.bias", features)
        return out

    def conv(self, prefix: str, in_channels: int, out_channels: int, kernel: int, *,
             bias: bool = True) -> dict[str, np.ndarray]:
        """torch ``nn.Conv2d`` (weight (out, in, kh, kw)) -> Flax ``Conv`` (kernel (kh, kw, in, out))."""
        w = self.get(f"{prefix}.weight", out_channels, in_channels, kernel, kernel)
        out = {"kernel": w.transpose(2, 3, 1, 0)}
        if bias:
            out["bias"] = self.get(f"{prefix}.bias", out_channels)
        return out

    def finish(self) -> None:
        """Raise one InputError naming every missing, unexpected and mis-shaped tensor."""
        unexpected = sorted(k for k in self.state_dict
                            if k not in self.used and not (self.ignore and k.startswith(self.ignore)))
        problems = []
        for label, names in (("missing", sorted(self.missing)), ("unexpected", unexpected),
                             ("mis-shaped", sorted(self.misshaped))):
            if names:
                shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
                problems.append(f"{label} tensors: {shown}")
        if problems:
            raise InputError(
                f"{self.what}: the checkpoint does not convert to the JAX model: " + "; ".join(problems)
                + ". Check the config overrides (sizes, patch, classes) against the checkpoint.")
