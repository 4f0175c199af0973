"""Precision, recall, density and coverage on k-nearest-neighbour manifolds.

Each set's manifold is the union of balls around its feature vectors, the radius of a
ball being the distance to that vector's k-th nearest neighbour in its own set (k=3, the
vector itself not counted). On these manifolds:

- precision (Kynkaanniemi et al. 2019, as ADM): the fraction of samples inside the reference manifold;
- recall: the fraction of reference vectors inside the sample manifold;
- density (Naeem et al. 2020): the number of reference balls a sample falls in, averaged over
  samples and divided by k (1 when samples are distributed like the reference; above 1 when they
  crowd dense regions);
- coverage (Naeem et al. 2020): the fraction of reference balls holding at least one sample.

Density and coverage use the same reference balls (radii) as precision. Like ADM's evaluator
this compares squared Euclidean distances (same order as distances) and counts a point on a
ball's boundary as inside (``<=``; the ``prdc`` package uses ``<``: the same numbers unless a
distance ties a radius exactly). Distances are computed in float32 (ADM tries float16 first) in
row blocks, one pass over the reference x sample distances for all four numbers, so a 50,000 x
10,000 problem never needs the whole distance matrix.
"""

from __future__ import annotations

import torch

from adapters.api.errors import InputError

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


def manifold_metrics(reference, samples, k: int = ADM_K, *, device: str | torch.device | None = None,
                     dtype: torch.dtype = torch.float32, block: int = 4096) -> dict[str, float]:
    """Precision, recall, density and coverage of `samples` against `reference`.

    Args:
        reference: reference features (N_r, D), e.g. pool_3 of ADM's 10,000 reference images.
        samples: sample features (N_s, D).
        k: neighbourhood size (ADM: 3); each set needs more than k vectors.
        device: where to compute (default: the device of `samples` if a tensor, else CPU).
        dtype: distance dtype (float32; float64 for exact brute-force checks).
        block: rows per distance block (memory: block x N x itemsize bytes).

    Returns:
        ``{"precision": ..., "recall": ..., "density": ..., "coverage": ...}``

    Example::

        m = manifold_metrics(ref_feats, sample_feats)   # ADM's k=3 manifolds
        m["density"], m["coverage"]
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
    in_ref_balls = torch.zeros(len(smp), dtype=torch.float64, device=device)  # per sample: reference balls it is in
    recalled, covered = [], []
    for start in range(0, len(ref), block):
        d = _sq_distances(ref[start:start + block], smp)  # (b, N_s)
        inside = d <= ref_radii[start:start + block, None]  # (b, N_s): sample j in reference ball i
        in_ref_balls += inside.sum(0, dtype=torch.float64)
        covered.append(inside.any(dim=1))
        recalled.append((d <= smp_radii[None, :]).any(dim=1))
    return {"precision": (in_ref_balls > 0).double().mean().item(),
            "recall": torch.cat(recalled).double().mean().item(),
            "density": (in_ref_balls.sum() / (k * len(smp))).item(),
            "coverage": torch.cat(covered).double().mean().item()}


def precision_recall(reference, samples, k: int = ADM_K, **options) -> tuple[float, float]:
    """(precision, recall) of `samples` against `reference`; options as `manifold_metrics`.

    Example::

        p, r = precision_recall(ref_feats, sample_feats)
    """
    m = manifold_metrics(reference, samples, k, **options)
    return m["precision"], m["recall"]
