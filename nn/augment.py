"""Seeded data augmentation on NHWC image batches."""

from __future__ import annotations

import numpy as np

from nn.backend import array_module


def random_shift(x: np.ndarray, max_shift: int, rng: np.random.Generator, fill: float = 0.0
                 ) -> np.ndarray:
    """Shift each image by its own (dy, dx) in [-max_shift, max_shift]^2, filling with `fill`.

    x: (N, H, W, C) -> (N, H, W, C), a new array. `fill` is the background value (after
    normalization MNIST's black is not 0). The shifts are drawn on the host from `rng` whatever
    the array module of x, so a seed gives the same shifts on every device. NumPy images sharing
    a shift are moved in one slice copy; on a GPU one gather moves them all (`shift_gather`).
    """
    if max_shift == 0:
        return x
    n, h, w = x.shape[:3]
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    if array_module(x) is not np:
        return shift_gather(x, shifts, fill)
    out = np.full_like(x, fill)
    code = (shifts[:, 0] + max_shift) * (2 * max_shift + 1) + (shifts[:, 1] + max_shift)
    for c in np.unique(code):
        idx = np.flatnonzero(code == c)
        dy, dx = shifts[idx[0]]
        out[idx, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            x[idx, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def shift_gather(x, shifts: np.ndarray, fill: float):
    """`random_shift` with the shifts given, as one gather: out[n, i, j] = x[n, i - dy, j - dx],
    `fill` where that falls outside. x: (N, H, W, C) on any array module; shifts: (N, 2) ints.

    A few whole-batch operations instead of one copy per distinct shift: on a GPU, where each
    operation is a kernel launch, that is the cheap way round.
    """
    xp = array_module(x)
    n, h, w = x.shape[:3]
    s = xp.asarray(shifts)
    rows = xp.arange(h)[None, :, None] - s[:, 0, None, None]                 # (N, H, 1) source row
    cols = xp.arange(w)[None, None, :] - s[:, 1, None, None]                 # (N, 1, W) source column
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)             # (N, H, W)
    src = x[xp.arange(n)[:, None, None], rows.clip(0, h - 1), cols.clip(0, w - 1)]  # (N, H, W, C)
    return xp.where(inside[..., None], src, xp.asarray(fill, dtype=x.dtype))
