"""MNIST-100: two MNIST digits side by side (28x56), label 10 * tens + ones."""

from __future__ import annotations

import numpy as np

from nn.files import DataFileError

NUM_CLASSES = 100


def balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """n labels in 0..99, each appearing n // 100 or n // 100 + 1 times, in random order."""
    base = np.arange(n, dtype=np.int64) % NUM_CLASSES
    # Which labels get the extra sample when n is not a multiple of 100 is random too.
    offset = rng.integers(NUM_CLASSES)
    return rng.permutation((base + offset) % NUM_CLASSES)


def draw_pairs(digit_labels: np.ndarray, pair_labels: np.ndarray, rng: np.random.Generator
               ) -> np.ndarray:
    """For each pair label, pick a source digit image for its tens and its ones place.

    digit_labels: (M,) labels of the source MNIST split; pair_labels: (N,) in 0..99.
    Returns (N, 2) int64 indices into the source split: column 0 tens, column 1 ones.
    """
    digit_labels = np.asarray(digit_labels)
    order = np.argsort(digit_labels, kind="stable")                # source indices grouped by digit
    counts = np.bincount(digit_labels, minlength=10)
    if (counts == 0).any():
        raise DataFileError(f"source split lacks digit(s) {np.flatnonzero(counts == 0).tolist()}")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    digits = np.stack([pair_labels // 10, pair_labels % 10], axis=1)   # (N, 2)
    # A uniform draw within each digit's group, in integers only: identical on every machine.
    within = rng.integers(0, counts[digits])
    return order[starts[digits] + within]


def compose(images: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(M, 28, 28) source digits and (N, 2) indices -> (N, 28, 56): tens left, ones right."""
    return np.concatenate([images[pairs[:, 0]], images[pairs[:, 1]]], axis=2)


def synthesize(images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
               ) -> dict[str, np.ndarray]:
    """A balanced MNIST-100 split of n pairs drawn from one MNIST split.

    Returns {"images": (n, 28, 56) uint8, "labels": (n,) uint8, "pairs": (n, 2) int32}.
    """
    pair_labels = balanced_labels(n, rng)
    pairs = draw_pairs(labels, pair_labels, rng)
    return {
        "images": compose(images, pairs),
        "labels": pair_labels.astype(np.uint8),
        "pairs": pairs.astype(np.int32),
    }
