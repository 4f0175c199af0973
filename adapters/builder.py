"""One builder for every family: the steps each family's registry builder used to repeat.

A family describes what is its own (how to make the network, what its `ModelInfo` says beyond
the network's size, how its released files map onto the network, and its sampler class) and
`build_sampler` does the rest, the way timm's ``build_model_with_cfg`` serves every timm model:

1. the network is made on the target device (``"meta"`` allocates nothing) and cast to the dtype;
   when a checkpoint will overwrite every tensor, ``torch.nn.init`` draws nothing (`skip_init`);
2. a checkpoint, if given, is read safely, its EMA entry chosen (or the one the ref names),
   its keys mapped by the family's `Layout` (renamed, ignored keys named in a warning,
   converted) and loaded strictly, every missing, unexpected and mis-shaped tensor named;
3. `ModelInfo` is filled in: parameters counted, GFLOPs from the network's ``flops()``, and
   ``weights`` the checkpoint's fingerprint or ``random-init``;
4. the family's sampler wraps the network (the sampler owns its decoder, if any).

Config overrides are applied by the registry before the builder runs (`load_sampler`), and
random weights are drawn under its fixed seed. `sample_fields` fills the ``describe`` fields
of a family whose samples are square (C, S, S) arrays; the config checks families share are
in `adapters.base` (``check_*``).

Example (SiT's builder)::

    def build(name, config, *, checkpoint=None, device="cpu", dtype=torch.float32):
        check_config(name, config)
        return build_sampler(
            name, FAMILY, make_net=lambda: DiT(...), checkpoint=checkpoint, device=device, dtype=dtype,
            layout=Layout(convert=lambda sd, what: drop_learned_sigma(sd, config, what)),
            describe=lambda net: dict(nfe=..., sequential_steps=..., num_classes=config.num_classes,
                                      **sample_fields("latent", config.in_channels, config.input_size)),
            sampler=lambda info, net: SiTSampler(info, net, config, device=device, dtype=dtype))
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from adapters.api.checkpoint import CheckpointRef, as_ref, load_checkpoint
from adapters.api.registry import NN_INITIALISERS
from adapters.api.sampler import RANDOM_INIT, ModelInfo, Sampler, decoded_side


def count_params(module: nn.Module) -> int:
    """Parameters of `module` (buffers are not counted)."""
    return sum(p.numel() for p in module.parameters())


def sample_fields(space: str, channels: int, side: int, image_size: int | None = None) -> dict[str, Any]:
    """The `ModelInfo` fields of samples that are (channels, side, side) arrays in `space`:
    ``space``, ``sample_shape`` and ``image_size`` (by default the side they decode to, 8x for
    the SD-VAE latent). Families check `space` (`check_space`) before they build.

    Example::

        >>> sample_fields("latent", 4, 32)
        {'space': 'latent', 'sample_shape': (4, 32, 32), 'image_size': 256}
    """
    return dict(space=space, sample_shape=(channels, side, side),
                image_size=decoded_side(space, side) if image_size is None else image_size)


@contextmanager
def skip_init() -> Iterator[None]:
    """Make ``torch.nn.init``'s initialisers leave their tensor as allocated while a network that a
    strict checkpoint load will overwrite is built (as transformers' ``no_init_weights`` does):
    drawing 675M random numbers costs about 10 s on a CPU, and the load replaces every one.

    Example::

        >>> with skip_init():
        ...     w = torch.nn.init.normal_(torch.zeros(2))
        >>> w.tolist()
        [0.0, 0.0]
    """
    saved = {name: getattr(nn.init, name) for name in NN_INITIALISERS}
    for name in saved:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


@dataclass(frozen=True)
class Layout:
    """How a family's released checkpoint files map onto its network (see `load_checkpoint`).

    Attributes:
        rename: a file key -> the network's key (e.g. dropping a ``net.`` prefix).
        ignore: keys of the file the family does not use (a training-only head); dropped and
            named in a `CheckpointWarning` with `ignore_reason`.
        convert: ``convert(state_dict, what) -> state_dict``, the last change before the strict
            check (e.g. dropping learned-sigma rows); `what` names the file for its warning.
    """

    rename: Callable[[str], str] | None = None
    ignore: Callable[[str], bool] | None = None
    ignore_reason: str = ""
    convert: Callable[[dict[str, torch.Tensor], str], dict[str, torch.Tensor]] | None = None

    def load(self, net: nn.Module, checkpoint: CheckpointRef | str) -> str:
        """Load `checkpoint` into `net` strictly through this layout; returns its fingerprint."""
        ref = as_ref(checkpoint)
        convert = None if self.convert is None else (lambda sd: self.convert(sd, str(ref.path)))
        return load_checkpoint(net, ref, ignore=self.ignore, ignore_reason=self.ignore_reason, rename=self.rename,
                               convert=convert)


def build_sampler(name: str, family: str, *, make_net: Callable[[], nn.Module],
                  describe: Callable[[nn.Module], dict[str, Any]],
                  sampler: Callable[[ModelInfo, nn.Module], Sampler], checkpoint: CheckpointRef | str | None,
                  device: str | torch.device, dtype: torch.dtype, layout: Layout = Layout(),
                  gflops: Callable[[nn.Module], float] | None = None) -> Sampler:
    """Build a family's sampler (see the module docstring).

    Args:
        name: the model id, for messages and `ModelInfo.name`.
        family: `ModelInfo.family`.
        make_net: makes the network (called under the target device).
        describe: the `ModelInfo` fields that are the family's own, from the built network:
            ``nfe``, ``sequential_steps``, ``space``, ``sample_shape``, ``image_size``,
            ``num_classes``.
        sampler: wraps the network and its `ModelInfo` in the family's sampler.
        checkpoint: a path or `CheckpointRef` (which entry to load), or None for random weights.
        device, dtype: where and in what precision the network lives.
        layout: how the family's files map onto the network.
        gflops: FLOPs of one network evaluation per image (multiply-add = 2) from the network;
            default ``net.flops()``.
    """
    device = torch.device(device)
    # A strict load (missing tensors are an error) overwrites every parameter and persistent
    # buffer, so nothing initialised here survives it.
    with torch.device(device), (skip_init() if checkpoint is not None else nullcontext()):
        net = make_net()
    net = net.to(dtype)
    weights = RANDOM_INIT if checkpoint is None else layout.load(net, checkpoint)
    flops = net.flops() if gflops is None else gflops(net)
    info = ModelInfo(name=name, family=family, params=count_params(net), gflops=flops / 1e9, weights=weights,
                     **describe(net))
    return sampler(info, net)
