"""Inception Score, streamed, with the ADM evaluator's splits.

ADM (guided-diffusion ``evaluations/evaluator.py``, ``compute_inception_score``) takes the
softmax of pool_3 times the 1008-class weight matrix (no bias), cuts the samples in
consecutive splits of 5,000 in their order (no shuffle; 10 splits for 50,000 samples, a
short last split otherwise), and averages exp(mean KL(p(y|x) || p(y))) over the splits.

The KL of a split is ``mean_i sum_j p_ij log p_ij - sum_j pbar_j log pbar_j``, so each
split needs only the running sum of p log p and the running sum of p: predictions never
sit in memory.
"""

from __future__ import annotations

import numpy as np
import torch

from adapters.api.errors import InputError

ADM_SPLIT_SIZE = 5000


class InceptionScore:
    """Accumulates class logits batch by batch; `result()` gives (mean, std over splits, splits).

    Example::

        acc = InceptionScore()
        for logits in batches:       # (B, 1008), in sample order
            acc.update(logits)
        score, spread, splits = acc.result()
    """

    def __init__(self, split_size: int = ADM_SPLIT_SIZE):
        if split_size < 1:
            raise InputError(f"split_size must be positive, got {split_size}")
        self.split_size = split_size
        self.count = 0
        self._plogp: list[float] = []  # per split: sum_i sum_j p_ij log p_ij
        self._psum: list[np.ndarray] = []  # per split: sum_i p_i, (K,)
        self._n: list[int] = []

    def update(self, logits) -> None:
        logits = torch.as_tensor(logits).detach().to("cpu", torch.float64)  # (B, K)
        if logits.ndim != 2:
            raise InputError(f"logits must have shape (B, classes), got {tuple(logits.shape)}")
        if not torch.isfinite(logits).all():
            raise InputError("logits contain NaN or Inf")
        logp = torch.log_softmax(logits, dim=1)  # (B, K); exact 0 * log 0 = 0 below
        p = logp.exp()
        plogp = torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=1).numpy()  # (B,)
        p = p.numpy()
        start = 0
        while start < len(p):
            if not self._n or self._n[-1] == self.split_size:
                self._plogp.append(0.0)
                self._psum.append(np.zeros(p.shape[1]))
                self._n.append(0)
            take = min(self.split_size - self._n[-1], len(p) - start)
            self._plogp[-1] += float(plogp[start:start + take].sum())
            self._psum[-1] += p[start:start + take].sum(axis=0)
            self._n[-1] += take
            start += take
        self.count += len(p)

    def result(self) -> tuple[float, float, int]:
        if self.count == 0:
            raise InputError("the Inception Score needs at least one sample")
        scores = []
        for plogp, psum, n in zip(self._plogp, self._psum, self._n):
            pbar = psum / n  # (K,)
            entropy_of_mean = float((pbar[pbar > 0] * np.log(pbar[pbar > 0])).sum())
            scores.append(np.exp(plogp / n - entropy_of_mean))
        return float(np.mean(scores)), float(np.std(scores)), len(scores)


def inception_score(logits, split_size: int = ADM_SPLIT_SIZE) -> tuple[float, float, int]:
    """IS of all `logits` (N, K) at once: (mean over splits, std over splits, number of splits).

    Example::

        >>> round(inception_score(torch.zeros(10, 1008))[0], 9)   # uniform predictions
        1.0
    """
    acc = InceptionScore(split_size)
    acc.update(logits)
    return acc.result()
