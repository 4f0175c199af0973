"""Inception Score against closed forms and a direct transcription of ADM's split formula."""

import numpy as np
import pytest
import torch

from adapters.api.errors import InputError
from harness.metrics.inception_score import InceptionScore, inception_score


def adm_reference(preds, split_size):
    """ADM evaluator's compute_inception_score on softmax outputs (numpy, float64)."""
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), len(scores)


def test_uniform_predictions_score_one():
    score, spread, splits = inception_score(torch.zeros(30, 1008))
    assert score == pytest.approx(1.0, abs=1e-12) and spread == pytest.approx(0, abs=1e-12) and splits == 1


@pytest.mark.parametrize("k", [2, 10, 100])
def test_confident_balanced_predictions_score_k(k):
    labels = torch.arange(5 * k) % k
    logits = torch.nn.functional.one_hot(labels, 1008).double() * 1e4  # softmax is one-hot to rounding
    assert inception_score(logits)[0] == pytest.approx(k, rel=1e-12)


def test_streamed_splits_equal_adm_formula():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((23, 50)) * 3
    preds = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    acc = InceptionScore(split_size=5)
    for lo in range(0, 23, 4):  # batches straddle split boundaries
        acc.update(torch.from_numpy(logits[lo:lo + 4]))
    score, _, splits = acc.result()
    ref, ref_splits = adm_reference(preds, 5)
    assert splits == ref_splits == 5
    assert score == pytest.approx(ref, rel=1e-12)


def test_bad_input():
    with pytest.raises(InputError, match="NaN or Inf"):
        inception_score(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(InputError, match="at least one sample"):
        InceptionScore().result()
    with pytest.raises(InputError, match="split_size"):
        InceptionScore(0)
