"""Precision and recall on k-nearest-neighbour manifolds (Kynkaanniemi et al. 2019), as ADM.

Each set's manifold is the union of balls around its feature vectors, the radius of a
ball being the distance to that vector's k-th nearest neighbour in its own set (k=3, the
vector itself not counted). Precision: the fraction of samples inside the reference
manifold. Recall: the fraction of reference vectors inside the sample manifold.

Like ADM's evaluator this compares squared Euclidean distances (same order as distances);
unlike it, distances are computed in float32 (ADM tries float16 first), in row blocks so a
50,000 x 10,000 problem never needs the whole distance matrix.
"""

from __future__ import annotations

import torch

from harness.errors import InputError

ADM_K = 3


def _sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (A, B) between rows of a (A, D) and b (B, D)."""
    d = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None, :]  # (A, B)
    return d.clamp_min_(0)


def _radii(feats: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Squared distance of each row to its k-th nearest other row, (N,)."""
    out = []
    for start in range(0, len(feats), block):
        d = _sq_distances(feats[start:start + block], feats)  # (b, N), self at distance 0
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int) -> torch.Tensor:
    """For each query row: is it within radius of some centre? (Q,) bool."""
    out = []
    for start in range(0, len(queries), block):
        d = _sq_distances(queries[start:start + block], centres)  # (b, C)
        out.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(reference, samples, k: int = ADM_K, *, device: str | torch.device | None = None,
                     dtype: torch.dtype = torch.float32, block: int = 4096) -> tuple[float, float]:
    """Precision and recall of `samples` against `reference` (both (N, D) feature arrays).

    Args:
        reference: reference features (N_r, D), e.g. pool_3 of ADM's 10,000 reference images.
        samples: sample features (N_s, D).
        k: neighbourhood size (ADM: 3); each set needs more than k vectors.
        device: where to compute (default: the device of `samples` if a tensor, else CPU).
        dtype: distance dtype (float32; float64 for exact brute-force checks).
        block: rows per distance block (memory: block x N x itemsize bytes).

    Example::

        p, r = precision_recall(ref_feats, sample_feats)   # ADM's k=3 manifolds
    """
    ref = torch.as_tensor(reference)
    smp = torch.as_tensor(samples)
    device = device or (smp.device if isinstance(samples, torch.Tensor) else "cpu")
    ref, smp = ref.to(device, dtype), smp.to(device, dtype)
    if ref.ndim != 2 or smp.ndim != 2 or ref.shape[1] != smp.shape[1]:
        raise InputError(f"precision/recall needs two (N, D) feature sets of one D, got "
                         f"{tuple(ref.shape)} and {tuple(smp.shape)}")
    for name, x in (("reference", ref), ("sample", smp)):
        if len(x) <= k:
            raise InputError(f"precision/recall with k={k} needs more than {k} {name} vectors, got {len(x)}")
        if not torch.isfinite(x).all():
            raise InputError(f"{name} features contain NaN or Inf")
    ref_radii, smp_radii = _radii(ref, k, block), _radii(smp, k, block)
    precision = _inside(smp, ref, ref_radii, block).double().mean().item()
    recall = _inside(ref, smp, smp_radii, block).double().mean().item()
    return precision, recall
