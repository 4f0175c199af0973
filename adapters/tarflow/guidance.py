"""Classifier-free guidance of TARFlow's affine outputs, shared by the torch and Flax samplers.

TARFlow guides as the reference does: the conditional pass and an unconditional one (the
mean class embedding, with its own attention temperature) run stacked in one batch, and the
conditional log-scale and shift are pushed away from the unconditional ones,
``a += g * (a - a_uncond)`` (the same for ``b``; `guide_what` chooses which). `guide` is plain
slicing and arithmetic, so one function serves torch tensors and JAX arrays;
`check_guidance_options` gives both backends the same checks and messages.

Example::

    >>> import torch
    >>> a = torch.tensor([[2.0], [1.0]])  # row 0 conditional, row 1 unconditional
    >>> guide(a, a, 1, 0.5, "a")
    (tensor([[2.5000]]), tensor([[2.]]))
"""

from __future__ import annotations

from typing import Any

from adapters.api.errors import InputError
from adapters.api.sampler import check_guidance

GUIDABLE = frozenset("ab")  # the affine outputs guidance may act on: log-scale a, shift b


def check_guidance_options(name: str, guidance: object, attn_temp: float, guide_what: str) -> float:
    """The guidance scale g >= 0 as a float; a bad scale, a non-positive `attn_temp` or a
    `guide_what` not made of "a" and "b" is an InputError."""
    g = check_guidance(name, guidance)
    if g < 0:
        raise InputError(f"{name}: guidance must be >= 0, got {g}")
    if attn_temp <= 0:
        raise InputError(f"{name}: attn_temp must be positive, got {attn_temp}")
    if not set(guide_what) <= GUIDABLE:
        raise InputError(f"{name}: guide_what must be made of 'a' and 'b', got {guide_what!r}")
    return g


def guide(a: Any, b: Any, n: int, g: Any, guide_what: str) -> tuple[Any, Any]:
    """Guided (a, b) of the conditional rows: a, b are (2n, ...) with the conditional rows
    [:n] over the unconditional rows [n:]; g a scale or an array broadcast to (n, ...).
    Returns (a_c, b_c), (n, ...) each."""
    a_c, a_u = a[:n], a[n:]
    b_c, b_u = b[:n], b[n:]
    if "a" in guide_what:
        a_c = a_c + g * (a_c - a_u)
    if "b" in guide_what:
        b_c = b_c + g * (b_c - b_u)
    return a_c, b_c
