"""Training a BiFlow reverse model G from a frozen TARFlow teacher (BiFlow's recipe in miniature).

What is trained, and how (our reading of arXiv 2512.10953 at toy scale):

- **Pairs from the teacher.** Each training image x is noised as the teacher was trained,
  x~ = x + sigma * eps, and the frozen teacher maps it forward to its noise z = T(x~). G
  takes z (as an image, the layout `TARFlowSampler` draws its noise in) and must return
  an image in one pass. ``draws`` noise draws per image make the pool of pairs, computed
  once before training.
- **Learned denoising.** At guidance 0 G's target is the *clean* x, not the noisy x~ that
  inverting the flow gives back: G's denoising block replaces the teacher's score step.
- **Hidden alignment.** Stage k of G (see `BiFlowNet`) is projected by `AlignmentHeads`
  onto the teacher's token space and matched (MSE) to the teacher's trajectory state after
  undoing its block B-1-k, for the same z: stage 0 nearest the noise, the last stage
  nearest the data.
- **Training-time guidance.** Each pair gets a guidance scale g drawn from
  ``TRAIN_GUIDANCE``, which G receives as an input. For g > 0 the target and the aligned
  states come from the teacher's guided reverse of the same z (constant-scale guidance,
  ``a += g (a - a_u)`` on both affine outputs) followed by the teacher's score-based
  denoising step; for g = 0 the trajectory is the forward one (the flow is exact) and
  the target the clean image. So G learns the whole family of guided teachers, and any
  scale costs one pass.

Loss = MSE(G(z, y, g), target) + ``align_weight`` * mean over stages of the alignment MSE.

Example::

    >>> from adapters import load_sampler
    >>> from adapters.biflow.model import AlignmentHeads
    >>> teacher, student = load_sampler("tarflow-mini"), load_sampler("biflow-mini")
    >>> x, y = torch.rand(8, 3, 8, 8) * 2 - 1, torch.randint(0, 10, (8,))
    >>> pairs = make_pairs(teacher, x, y, draws=1, scales=(0.0, 1.0))
    >>> heads = AlignmentHeads.for_net(student.net)
    >>> float(distill_objective(student.net, heads, pairs)(torch.Generator().manual_seed(0), 4)) > 0
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.api.errors import InputError
from adapters.api.training import Objective, Trainable
from adapters.biflow.model import AlignmentHeads, BiFlowNet
from adapters.layers import patchify, unpatchify
from adapters.tarflow.sampler import TARFlowSampler

TRAIN_GUIDANCE = (0.0, 0.5, 1.0, 2.0)  # scales G is trained at, one drawn per pair
ALIGN_WEIGHT = 1.0


@dataclass
class Pairs:
    """The training pool: G's inputs, targets and the teacher's trajectory states, P pairs."""

    noise: torch.Tensor  # (P, C, H, W): the teacher's z, laid out as sampler noise
    labels: torch.Tensor  # (P,)
    guidance: torch.Tensor  # (P,) scale of each pair
    target: torch.Tensor  # (P, C, H, W): what G must output
    states: list[torch.Tensor]  # num_blocks x (P, T, D), in stage order (nearest the noise first)

    def __len__(self) -> int:
        return len(self.labels)


@torch.no_grad()
def _forward_states(teacher: TARFlowSampler, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Teacher's tokens before and after each block: [h_0 (data side), ..., h_B = z], each (N, T, D)."""
    h = patchify(x, teacher.config.patch_size)
    states = [h]
    for block in teacher.net.blocks:
        h, _ = block(h, y)
        states.append(h)
    return states


@torch.no_grad()
def _reverse_states(teacher: TARFlowSampler, z: torch.Tensor, y: torch.Tensor, g: float) -> list[torch.Tensor]:
    """States of the teacher's guided reverse from tokens z: after undoing block B-1, B-2, ..., 0."""
    h = z * teacher.net.var.sqrt()
    states = []
    for block in reversed(teacher.net.blocks):
        h = block.reverse(h, y, g)
        states.append(h)
    return states


def make_pairs(teacher: TARFlowSampler, x: torch.Tensor, y: torch.Tensor, *, draws: int = 4,
               scales: tuple[float, ...] = TRAIN_GUIDANCE, seed: int = 0, chunk: int = 1024) -> Pairs:
    """The pool of `draws` x N training pairs from the frozen teacher (see the module docstring).

    Args:
        teacher: a trained `TARFlowSampler` (pixel space, unpatchified noise layout).
        x: training images (N, C, H, W) in [-1, 1]; y: labels (N,).
        draws: noise draws per image.
        scales: guidance scales, one drawn uniformly per pair.
        seed: seeds the noise and the scale draws.
        chunk: pairs per teacher call (memory).
    """
    gen = torch.Generator().manual_seed(seed)
    p, size = teacher.config.patch_size, x.shape[-2:]
    xs, ys = x.repeat(draws, 1, 1, 1), y.repeat(draws)  # (P, C, H, W), (P,)
    noisy = xs + teacher.config.noise_std * torch.randn(xs.shape, generator=gen)
    g = torch.tensor(scales, dtype=torch.float32)[torch.randint(0, len(scales), (len(ys),), generator=gen)]  # (P,)
    z_tok, target = [], xs.clone()
    states: list[list[torch.Tensor]] = [[] for _ in teacher.net.blocks]
    for lo in range(0, len(ys), chunk):
        sl = slice(lo, lo + chunk)
        fwd = _forward_states(teacher, noisy[sl], ys[sl])
        z_tok.append(fwd[-1])
        for k, s in enumerate(fwd[-2::-1]):  # h_{B-1}, ..., h_0: the states after undoing B-1, ..., 0
            states[k].append(s.clone())
    z = torch.cat(z_tok)  # (P, T, D)
    states_cat = [torch.cat(s) for s in states]
    for scale in sorted(set(g.tolist()) - {0.0}):
        idx = (g == scale).nonzero().squeeze(1)
        for lo in range(0, len(idx), chunk):
            sub = idx[lo:lo + chunk]
            rev = _reverse_states(teacher, z[sub], ys[sub], scale)
            for k, s in enumerate(rev):
                states_cat[k][sub] = s
            image = unpatchify(rev[-1], p, tuple(size))  # (n, C, H, W), noisy guided sample
            target[sub] = teacher.denoise(image, ys[sub])
    noise = unpatchify(z / teacher.net.var.sqrt(), p, tuple(size))  # (P, C, H, W)
    return Pairs(noise=noise, labels=ys, guidance=g, target=target, states=states_cat)


def distill_objective(net: BiFlowNet, heads: AlignmentHeads, pairs: Pairs, *,
                      align_weight: float = ALIGN_WEIGHT) -> Objective:
    """``loss(generator, batch)``: reconstruction plus hidden-alignment loss on a batch of pairs."""
    if len(pairs.states) != net.num_stages:
        raise ValueError(f"the teacher has {len(pairs.states)} blocks, the student {net.num_stages} stages")

    def loss(gen: torch.Generator, batch: int) -> torch.Tensor:
        idx = torch.randint(0, len(pairs), (batch,), generator=gen)
        out, stages = net(pairs.noise[idx], pairs.labels[idx], pairs.guidance[idx], return_stages=True)
        recon = (out - pairs.target[idx]).pow(2).mean()
        align = torch.stack([(pred - s[idx]).pow(2).mean() for pred, s in zip(heads(stages), pairs.states)]).mean()
        return recon + align_weight * align

    return loss


def trainable(sampler, images: torch.Tensor, labels: torch.Tensor, *, teacher: TARFlowSampler | None = None,
              draws: int = 1, seed: int = 0) -> Trainable:
    """The track's ``trainer`` hook: the student's network and its alignment heads, distilled from
    the frozen `teacher` on `draws` noise draws per image (seeded by `seed`)."""
    if teacher is None:
        raise InputError(f"{sampler.info.name}: a BiFlow student is distilled from a teacher; pass teacher=")
    pairs = make_pairs(teacher, images, labels, draws=draws, seed=seed)
    heads = AlignmentHeads.for_net(sampler.net)
    return Trainable(nn.ModuleDict({"net": sampler.net, "heads": heads}), distill_objective(sampler.net, heads, pairs))
