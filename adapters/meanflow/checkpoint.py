"""The released MeanFlow checkpoint: train.py's Orbax TrainState, mapped onto the torch DiT.

utils/ckpt_util.py saves the TrainState {step, params, opt_state, ema_params} (train.py) with
flax's ``save_checkpoint_multiprocess``: a folder ``checkpoint_<step>/`` inside the work dir,
an Orbax PyTree checkpoint. The README's ``load_from`` is the folder holding it; either that
folder or the step folder is accepted. `adapters.api.checkpoint` restores it with orbax
(no target, so no JAX model is needed, for the torch backend too), chooses ``ema_params``
(what train.py samples and measures FID with) unless ``ema=`` names another entry, and gives
its leaves as ``/``-joined paths, e.g. ``net/blocks/layers_0/attn/qkv/_flax_linear/kernel``.

`to_torch` maps those onto `adapters.flowmatch.model.DiT`'s names:

- the DiT's own name ``net`` (``MeanFlow.setup``) is dropped, and so are the wrappers of
  models/torch_models.py, ``_flax_linear`` and ``_flax_embedding``;
- ``layers_<i>``, the children of flax's ``nn.Sequential`` (the blocks, the time MLPs'
  layers, the adaLN SiLU-Linear pairs), become ``<i>``;
- a Dense ``kernel`` (in, out) becomes torch's ``weight`` (out, in); the patch embedding's
  conv kernel (p, p, C, D), HWIO on NHWC inputs, becomes (D, C, p, p); the label table's
  ``embedding`` (rows, D) is its ``weight`` as it stands.

Tokens are row-major in both, and each output token holds its patch's (p, q, c) values in
both unpatchifies (NHWC there, NCHW here), so no other tensor changes. Keys without ``/``
(a state_dict saved from the torch module) pass unchanged, and a key that maps onto nothing
is named by the strict load.

Example::

    >>> sd = to_torch({"net/blocks/layers_3/attn/qkv/_flax_linear/kernel": torch.zeros(768, 2304)}, "ckpt")
    >>> {k: tuple(v.shape) for k, v in sd.items()}
    {'blocks.3.attn.qkv.weight': (2304, 768)}
"""

from __future__ import annotations

import re

import torch

from adapters.api.checkpoint import TREE_SEP
from adapters.builder import Layout

NET = "net"  # the DiT's name inside the official MeanFlow module
WRAPPERS = ("_flax_linear", "_flax_embedding")  # TorchLinear / TorchEmbedding hold their flax module so
SEQUENTIAL_CHILD = re.compile(r"layers_(\d+)")


def torch_name(path: str) -> str:
    """An official leaf path -> the torch key (``kernel`` and ``embedding`` become ``weight``)."""
    parts = path.split(TREE_SEP)
    if parts[0] == NET:
        parts = parts[1:]
    parts = [m.group(1) if (m := SEQUENTIAL_CHILD.fullmatch(p)) else p for p in parts if p not in WRAPPERS]
    if parts[-1] in ("kernel", "embedding"):
        parts[-1] = "weight"
    return ".".join(parts)


def torch_tensor(path: str, value: torch.Tensor) -> torch.Tensor:
    """A leaf's value in torch's layout: kernels transposed (Dense) or permuted (Conv, HWIO -> OIHW)."""
    if path.rsplit(TREE_SEP, 1)[-1] != "kernel":
        return value
    if value.ndim == 2:  # (in, out) -> (out, in)
        return value.t().contiguous()
    if value.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
        return value.permute(3, 2, 0, 1).contiguous()
    return value  # no such kernel in the official DiT: left for the strict load to name as mis-shaped


def to_torch(sd: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """The official param tree's leaves (``/``-joined paths) -> the torch DiT's state_dict (see the module docstring)."""
    return {(torch_name(k) if TREE_SEP in k else k): (torch_tensor(k, v) if TREE_SEP in k else v)
            for k, v in sd.items()}


LAYOUT = Layout(convert=to_torch)
