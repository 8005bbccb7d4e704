"""Seeded, stratified train/dev split."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, dev_size: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, dev), each sorted, with every class in the same proportion in both.

    Class c gets floor(dev_size * n_c / N) dev samples; the remainder goes to the classes with
    the largest fractional parts (ties to the smaller class id), so the sizes are exact.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < dev_size < n:
        raise ValueError(f"dev_size {dev_size} must be between 1 and {n - 1}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = dev_size * counts / n
    take = np.floor(exact).astype(np.int64)
    short = dev_size - int(take.sum())
    take[np.argsort(-(exact - take), kind="stable")[:short]] += 1
    dev = np.concatenate([
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)
    ])
    mask = np.zeros(n, dtype=bool)
    mask[dev] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)
