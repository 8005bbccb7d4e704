"""Seeded data augmentation on NHWC image batches."""

from __future__ import annotations

import numpy as np


def random_shift(x: np.ndarray, max_shift: int, rng: np.random.Generator, fill: float = 0.0
                 ) -> np.ndarray:
    """Shift each image by its own (dy, dx) in [-max_shift, max_shift]^2, filling with `fill`.

    x: (N, H, W, C) -> (N, H, W, C), a new array. `fill` is the background value (after
    normalization MNIST's black is not 0). Images sharing a shift are moved in one slice copy.
    """
    if max_shift == 0:
        return x
    n, h, w = x.shape[:3]
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    out = np.full_like(x, fill)
    code = (shifts[:, 0] + max_shift) * (2 * max_shift + 1) + (shifts[:, 1] + max_shift)
    for c in np.unique(code):
        idx = np.flatnonzero(code == c)
        dy, dx = shifts[idx[0]]
        out[idx, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            x[idx, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out
