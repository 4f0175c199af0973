"""Parallel decoding of TARFlow blocks: Jacobi and Gauss-Seidel-Jacobi (arXiv 2505.12849).

Inverting one flow block means solving the triangular system x_j = z_j exp(a_j(x_<j)) +
b_j(x_<j) for its tokens j = 1..T-1 (token 0 is z_0). Sequential decoding solves it one
token at a time. Jacobi iterates the whole block in parallel, x <- z exp(a(x)) + b(x),
which after k passes has tokens 0..k exact. Gauss-Seidel-Jacobi ("GS-Jacobi") cuts the
unknown tokens into contiguous segments ("GS modules"), runs Jacobi passes on one
segment at a time (attending to the finished segments through a key/value cache), and
hands the converged segment on to the next: one segment is Jacobi, T - 1 segments are
sequential decoding.

This module holds what the torch sampler and the Flax port share: the option checks and
the per-block `BlockSchedule` they resolve to, and the paper's two block metrics measured
on a batch of data, with the plan they suggest:

* CRM (convergence ranking metric) ranks blocks "tough" (needing many passes) or "simple":
  ``CRM = ||mean_n exp(-a) * x|| * ||W_a|| + ||W_b||``, with x the block's input (data side),
  a its log-scales and W_a, W_b the rows of ``proj_out`` that produce a and b;
* IGM (initial guessing metric) scores an initial guess by the error of the first Jacobi
  pass from it: ``IGM = ||mean_n (x^(1) - x)||``, for x^(0) = z ("noise") and x^(0) =
  (z_0, 0, ..., 0) ("zeros").

Norms are matrix norms of (T, D) arrays, spectral by default, as in the authors' code
(github:encoreus/GS-Jacobi_for_TarFlow, ``IGM_GRM.py``).

Example::

    s = load_sampler("tarflow-mini", checkpoint="tarflow-mini.pt")
    split = load_digits_split()
    metrics = gs_jacobi_metrics(s.net, split.train_x[:256], split.train_y[:256])
    plan = gs_jacobi_plan(metrics, s.config.num_patches)
    x = s.generate(noise, labels, **plan.options(), jacobi_tol=1e-3)
    s.last_stats["iterations_per_block"]   # passes per block, block 0 first
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from adapters.api.errors import InputError
from adapters.layers import patchify

SEQUENTIAL, JACOBI, GS_JACOBI = "sequential", "jacobi", "gs-jacobi"
DECODINGS = (SEQUENTIAL, JACOBI, GS_JACOBI)
NOISE, ZEROS = "noise", "zeros"
INITS = (NOISE, ZEROS)  # initial guess x^(0): the block's input z, or (z_0, 0, ..., 0)
NORMS = (2, 1, "fro")
# Without a plan every block is decoded as one segment, i.e. Jacobi with GS-Jacobi's options:
# segmenting pays off only on "tough" blocks, and cutting a simple block into k segments
# multiplies its passes by up to k, so no segment count is right for every block before the
# blocks have been ranked (`gs_jacobi_plan`). Measured on tarflow-mini (T = 16) after 300
# training steps, 64 samples, tolerances 1e-2 to 1e-4: 1 segment took 33 to 41 passes over
# the 4 blocks, 2 segments 48 to 57, 4 or more 60 (sequential's count).
DEFAULT_GS_SEGMENTS = 1
# The paper segments each tough block into 8 GS modules (its strategies [6-8-32-10] etc.).
PAPER_TOUGH_SEGMENTS = 8
# A block is tough when its CRM exceeds this multiple of the blocks' median CRM. On the
# paper's four CRM tables (README of the authors' code) this picks exactly the blocks
# their strategies segment.
TOUGH_FACTOR = 2.0

# Keys of `TARFlowSampler.last_stats` (and of the Flax port's statistics).
ITERATIONS_PER_BLOCK = "iterations_per_block"  # parallel passes per block, `TARFlow.blocks` order
ITERATIONS_MEAN = "iterations_mean"  # mean over blocks
ITERATIONS_MAX = "iterations_max"  # max over blocks
ITERATIONS_TOTAL = "iterations_total"  # sum over blocks: the dependent passes of one decoding
ITERATIONS_PER_SEGMENT = "iterations_per_segment"  # gs-jacobi: passes per segment, per block


@dataclass(frozen=True)
class BlockSchedule:
    """How one block is decoded in parallel.

    `segments` are (start, stop) ranges of the unknown tokens 1..T-1 in the block's own
    (possibly flipped) order, solved one after the other; segment s runs at most
    `max_iters[s]` Jacobi passes (never more than its length, which makes it exact), from
    the initial guess `init` ("noise" or "zeros").
    """

    segments: tuple[tuple[int, int], ...]
    max_iters: tuple[int, ...]
    init: str


def segment_bounds(num_tokens: int, num_segments: int) -> tuple[tuple[int, int], ...]:
    """Cut the unknown tokens 1..T-1 into `num_segments` contiguous ranges whose lengths
    differ by at most one, the longer ones first. With T divisible by k this is the
    authors' split: k - 1 modules of T/k tokens and a last one of T/k - 1.

    >>> segment_bounds(16, 4)
    ((1, 5), (5, 9), (9, 13), (13, 16))
    """
    unknowns = num_tokens - 1
    size, extra = divmod(unknowns, num_segments)
    bounds, start = [], 1
    for s in range(num_segments):
        stop = start + size + (s < extra)
        bounds.append((start, stop))
        start = stop
    return tuple(bounds)


def summarize_iterations(per_block: Sequence[int], per_segment: Sequence[Sequence[int]] | None = None) -> dict:
    """The `last_stats` entries for passes per block (JSON-serialisable)."""
    per_block = [int(i) for i in per_block]
    stats: dict[str, Any] = {
        ITERATIONS_PER_BLOCK: per_block,
        ITERATIONS_MEAN: sum(per_block) / len(per_block),
        ITERATIONS_MAX: max(per_block),
        ITERATIONS_TOTAL: sum(per_block),
    }
    if per_segment is not None:
        stats[ITERATIONS_PER_SEGMENT] = [[int(i) for i in block] for block in per_segment]
    return stats


def _per_block(name: str, option: str, value: Any, num_blocks: int, check) -> tuple:
    """A scalar for every block, or a sequence of one value per block (`TARFlow.blocks`
    order), each element passed through `check` (which raises on a bad one)."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_blocks:
            raise InputError(f"{name}: {option} has {len(value)} entries, but the model has {num_blocks} blocks; "
                             f"give one value, or one per block (block 0 first)")
        return tuple(check(v) for v in value)
    return (check(value),) * num_blocks


def _positive_int(name: str, option: str, upper: int | None = None, allow_none: bool = False):
    def check(v):
        if v is None and allow_none:
            return None
        ok = (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
              and (upper is None or v <= upper))
        if not ok:
            span = f"an integer in [1, {upper}]" if upper is not None else "an integer >= 1"
            raise InputError(f"{name}: {option} must be {span}{' or None' if allow_none else ''} "
                             f"(per block or for all), got {v!r}")
        return int(v)
    return check


def resolve_schedules(name: str, num_blocks: int, num_tokens: int, *, decoding: str, jacobi_tol: float,
                      jacobi_max_iters: Any = None, jacobi_init: Any = None,
                      gs_segments: Any = None) -> tuple[BlockSchedule, ...] | None:
    """Check the decoding options and resolve them to one `BlockSchedule` per block.

    Args:
        name: the model id error messages start with.
        num_blocks, num_tokens: the model's flow blocks and tokens T per block.
        decoding: "sequential", "jacobi" or "gs-jacobi".
        jacobi_tol: a segment stops once no entry of a sample moves by more than this in
            one pass (per sample: a converged sample is frozen while others go on).
        jacobi_max_iters: cap on the passes of each segment (Jacobi: of the block); None:
            the segment's length, which is exact. An int, or one per block.
        jacobi_init: initial guess, "noise" (x^(0) = z, the default) or "zeros"; one, or one
            per block.
        gs_segments: segments per block for "gs-jacobi", 1..T-1 (1 is Jacobi, T - 1 is
            sequential); one, or one per block. None: `DEFAULT_GS_SEGMENTS`.

    Returns:
        None for sequential decoding, else one `BlockSchedule` per block (`TARFlow.blocks`
        order).

    Raises:
        InputError naming the bad value and the valid ones.
    """
    if decoding not in DECODINGS:
        raise InputError(f"{name}: decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    if isinstance(jacobi_tol, bool) or not isinstance(jacobi_tol, numbers.Real) or not jacobi_tol >= 0:
        raise InputError(f"{name}: jacobi_tol must be a number >= 0, got {jacobi_tol!r}")
    if not math.isfinite(jacobi_tol):  # an infinite tolerance stops after one pass: an approximation, unnamed
        raise InputError(f"{name}: jacobi_tol must be finite, got {jacobi_tol!r}; 0 decodes exactly")
    if gs_segments is not None and decoding != GS_JACOBI:
        raise InputError(f"{name}: gs_segments applies to decoding='gs-jacobi' only, not {decoding!r}")
    if decoding == SEQUENTIAL:
        return None
    caps = _per_block(name, "jacobi_max_iters", jacobi_max_iters, num_blocks,
                      _positive_int(name, "jacobi_max_iters", allow_none=True))

    def check_init(v):
        if v not in INITS:
            raise InputError(f"{name}: jacobi_init must be one of {', '.join(INITS)} (per block or for all), got {v!r}")
        return v

    inits = _per_block(name, "jacobi_init", NOISE if jacobi_init is None else jacobi_init, num_blocks, check_init)
    counts = (1,) * num_blocks if decoding == JACOBI else _per_block(
        name, "gs_segments", DEFAULT_GS_SEGMENTS if gs_segments is None else gs_segments, num_blocks,
        _positive_int(name, "gs_segments", upper=num_tokens - 1))
    schedules = []
    for count, cap, init in zip(counts, caps, inits):
        bounds = segment_bounds(num_tokens, count)
        schedules.append(BlockSchedule(bounds, tuple(stop - start if cap is None else min(cap, stop - start)
                                                     for start, stop in bounds), init))
    return tuple(schedules)


# ---------------------------------------------------------------------------
# The paper's block metrics and the plan they suggest
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockMetrics:
    """CRM and IGM of one flow block, measured on a batch of data.

    `block` indexes `TARFlow.blocks` (block 0 is decoded last). ``crm = data_term *
    scale_weights + shift_weights``; `igm` maps each initial guess to its metric (lower
    is better).
    """

    block: int
    crm: float
    data_term: float  # ||mean_n exp(-a) * x||
    scale_weights: float  # ||W_a|| (0 for the shift-only flow, nvp=False)
    shift_weights: float  # ||W_b||
    igm: dict[str, float]


@dataclass(frozen=True)
class GSPlan:
    """Per-block GS-Jacobi settings (`TARFlow.blocks` order); `options()` gives `generate`'s
    keyword arguments."""

    segments: tuple[int, ...]
    max_iters: tuple[int | None, ...]
    init: tuple[str, ...]
    tough: tuple[int, ...]  # the blocks ranked tough

    def options(self) -> dict[str, Any]:
        """``{"decoding": "gs-jacobi", "gs_segments": ..., "jacobi_init": ..., "jacobi_max_iters": ...}``."""
        return {"decoding": GS_JACOBI, "gs_segments": self.segments, "jacobi_init": self.init,
                "jacobi_max_iters": self.max_iters}


def _matrix_norm(a: torch.Tensor, ord) -> float:
    return float(torch.linalg.matrix_norm(a, ord=ord))


@torch.no_grad()
def gs_jacobi_metrics(net, x: torch.Tensor, labels: torch.Tensor | None = None, *, ord=2) -> list[BlockMetrics]:
    """CRM and IGM of every block of a TARFlow, from a batch of data.

    The batch runs data to noise through the blocks; at each block, with x its input and
    z its output (both in the block's order) and (a, b) its affine parameters:

    * CRM's data term is the norm of the batch mean of exp(-a) * x, a (T, D) matrix;
    * IGM of a guess x^(0) is the norm of the batch mean of x^(1) - x, where x^(1) = z *
      exp(a(x^(0))) + b(x^(0)) is the first Jacobi pass from that guess.

    Args:
        net: an `adapters.tarflow.network.TARFlow` (a sampler's ``.net``).
        x: data in model space, (N, C, H, W), as the model was trained on (the authors use
            clean training images).
        labels: (N,) class ids, or None for the mean class embedding (the authors' choice).
        ord: matrix norm: 2 (spectral, the authors' default), 1 or "fro".

    Returns:
        One `BlockMetrics` per block, block 0 first.

    Example::

        metrics = gs_jacobi_metrics(sampler.net, split.train_x[:256], split.train_y[:256])
        [round(m.crm, 2) for m in metrics]
    """
    if ord not in NORMS:
        raise InputError(f"gs_jacobi_metrics: ord must be one of {', '.join(map(str, NORMS))}, got {ord!r}")
    param = next(net.parameters())
    tokens = patchify(x.to(param.device, param.dtype), net.patch_size)  # (N, T, D)
    if labels is not None:
        labels = labels.to(param.device, torch.long)
    out = []
    for index, block in enumerate(net.blocks):
        xp = block._permute(tokens)  # (N, T, D), the block's order
        cls = block.class_term(labels, xp.shape[0])
        a, b = block._affine(xp, cls)
        zp = (xp - b) * torch.exp(-a)
        weight = block.proj_out.weight  # (2D, C) for nvp: rows [:D] give a, [D:] give b
        d = xp.shape[-1]
        w_a, w_b = (weight[:d], weight[d:]) if block.nvp else (None, weight)
        data_term = _matrix_norm((torch.exp(-a) * xp).mean(dim=0), ord)
        scale_weights = 0.0 if w_a is None else _matrix_norm(w_a, ord)
        shift_weights = _matrix_norm(w_b, ord)
        igm = {}
        for init in INITS:
            guess = zp.clone() if init == NOISE else torch.cat([zp[:, :1], torch.zeros_like(zp[:, 1:])], dim=1)
            a0, b0 = block._affine(guess, cls)
            first = zp * torch.exp(a0) + b0  # (N, T, D): one Jacobi pass from the guess
            igm[init] = _matrix_norm((first - xp).mean(dim=0), ord)
        out.append(BlockMetrics(index, data_term * scale_weights + shift_weights, data_term, scale_weights,
                                shift_weights, igm))
        tokens = block._permute(zp)
    return out


def gs_jacobi_plan(metrics: Sequence[BlockMetrics], num_tokens: int, *, tough_factor: float = TOUGH_FACTOR,
                   tough_segments: int = PAPER_TOUGH_SEGMENTS, tough_max_iters: int | None = None,
                   simple_max_iters: int | None = None) -> GSPlan:
    """The paper's recipe from `gs_jacobi_metrics`: segment the tough blocks, run the
    others as one Jacobi segment, and start each block from its better initial guess.

    Args:
        metrics: one `BlockMetrics` per block, block 0 first.
        num_tokens: tokens T per block (``config.num_patches``).
        tough_factor: a block is tough when its CRM exceeds this multiple of the median CRM.
        tough_segments: segments of a tough block (the paper's 8), at most T - 1.
        tough_max_iters, simple_max_iters: pass caps per segment (the paper's fixed
            budgets, e.g. 32 and 10); None leaves it to the tolerance, capped exact.

    Returns:
        A `GSPlan`; pass ``**plan.options()`` to `generate`.
    """
    if not metrics:
        raise InputError("gs_jacobi_plan: no block metrics given")
    if isinstance(tough_segments, bool) or not isinstance(tough_segments, int) or tough_segments < 1:
        raise InputError(f"gs_jacobi_plan: tough_segments must be an integer >= 1, got {tough_segments!r}")
    median = statistics.median(m.crm for m in metrics)
    tough = tuple(m.block for m in metrics if m.crm > tough_factor * median)
    segments = tuple(min(tough_segments, num_tokens - 1) if m.block in tough else 1 for m in metrics)
    caps = tuple(tough_max_iters if m.block in tough else simple_max_iters for m in metrics)
    inits = tuple(min(INITS, key=lambda k, m=m: m.igm[k]) for m in metrics)  # ties keep "noise"
    return GSPlan(segments, caps, inits, tough)


def planned_setting(sampler, images: torch.Tensor, labels: torch.Tensor | None, *,
                    tol: float = 1e-3) -> tuple[dict, dict]:
    """The family's ``decoding_plan`` hook: GS-Jacobi options for `sampler`, planned on training
    `images` as the authors plan, and how they were chosen (for a track's manifest).

    `gs_jacobi_plan` on `gs_jacobi_metrics` of the images. When it ranks no block tough (every CRM
    within 2x of the median), its plan is plain Jacobi; the block of the highest CRM is then cut
    into the paper's 8 segments instead, so the setting is a GS-Jacobi one. `tol` is the setting's
    ``jacobi_tol``.
    """
    metrics = gs_jacobi_metrics(sampler.net, images, labels)
    plan = gs_jacobi_plan(metrics, sampler.config.num_patches)
    segments = list(plan.segments)
    if plan.tough:
        source = f"gs_jacobi_plan: tough blocks {list(plan.tough)}"
    else:
        top = max(metrics, key=lambda m: m.crm).block
        segments[top] = PAPER_TOUGH_SEGMENTS
        source = (f"gs_jacobi_plan ranked no block tough (CRM {[round(m.crm, 2) for m in metrics]}, none above "
                  f"2x the median): block {top}, the highest CRM, in {PAPER_TOUGH_SEGMENTS} segments")
    options = {"decoding": GS_JACOBI, "gs_segments": tuple(segments), "jacobi_tol": tol}
    if any(i != NOISE for i in plan.init):
        options["jacobi_init"] = plan.init
    return options, {"source": source, "options": {k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in options.items()},
                     "crm": [m.crm for m in metrics], "igm": [m.igm for m in metrics]}
