"""Exercise: softmax cross-entropy (docs/02-softmax-cross-entropy.md).
Check it with `python -m exercises check softmax_cross_entropy`."""

import numpy as np


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """logits: (N, K) float, labels: (N,) int -> (loss, dlogits).

    loss is the mean over the batch of -log softmax(logits)[n, labels[n]]; dlogits (N, K) is its
    gradient. It must stay finite for logits of 1000 (subtract each row's maximum first).
    """
    raise NotImplementedError
