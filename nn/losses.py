"""Softmax cross-entropy, computed stably (row max subtracted, log-sum-exp)."""

from __future__ import annotations

import numpy as np

from nn.backend import array_module


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax. logits: (N, K) -> (N, K), same dtype."""
    xp = array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax. logits: (N, K) -> probabilities (N, K), same dtype."""
    e = array_module(logits).exp(logits - logits.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def _check(logits: np.ndarray, labels: np.ndarray, label_smoothing: float) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must be ({logits.shape[0]},), got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), "
                         f"got range [{labels.min()}, {labels.max()}]")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray,
                          label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over the batch and its gradient w.r.t. the logits.

    logits: (N, K) float; labels: (N,) int class indices.
    With label smoothing eps the target is (1 - eps) * one_hot + eps / K, as in
    torch.nn.functional.cross_entropy(label_smoothing=eps).
    Returns (loss: float, dlogits: (N, K) in the dtype of logits).
    """
    xp = array_module(logits)
    labels = xp.asarray(labels)                                   # on the logits' device
    _check(logits, labels, label_smoothing)
    n, k = logits.shape
    rows = xp.arange(n)
    log_p = log_softmax(logits)                                   # (N, K)
    nll = -log_p[rows, labels]                                    # (N,)
    if label_smoothing:
        # -sum_k target_k log p_k, split into the one-hot part and the uniform part
        nll = (1.0 - label_smoothing) * nll - (label_smoothing / k) * log_p.sum(axis=1)
    loss = float(nll.mean())

    dlogits = xp.exp(log_p)                                       # softmax, reused
    if label_smoothing:
        dlogits -= label_smoothing / k
        dlogits[rows, labels] -= 1.0 - label_smoothing
    else:
        dlogits[rows, labels] -= 1.0
    dlogits /= n
    return loss, dlogits
