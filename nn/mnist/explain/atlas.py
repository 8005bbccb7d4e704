"""Arrays as pictures, for the web payload and the sheet alike: channel maps, gradients and
convolution kernels laid out as atlases, values on a diverging palette, the saliency's colours."""

from __future__ import annotations

import numpy as np
from PIL import Image

MAP_COLUMNS = 8  # channels per row of a layer's map atlas
MATRIX_ROWS = 16  # a Linear's dW is drawn for its output units with the largest gradient, at most this many


def _gray(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((a - lo) * (255 / (hi - lo if hi > lo else 1)), 0, 255).astype(np.uint8)


def tile_grid(tiles: np.ndarray, columns: int, gap) -> np.ndarray:
    """(n, h, w[, 3]) uint8 tiles -> one grid, tile t at row t // columns, column t % columns,
    1 px gaps of colour `gap`."""
    n, h, w = tiles.shape[:3]
    cols = min(columns, n)
    rows = -(-n // cols)
    grid = np.empty((rows * (h + 1) - 1, cols * (w + 1) - 1, *tiles.shape[3:]), np.uint8)
    grid[...] = gap
    for t in range(n):
        r, q = divmod(t, cols)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = tiles[t]
    return grid


def map_atlas(maps: np.ndarray, lo: float, hi: float, columns: int = MAP_COLUMNS) -> np.ndarray:
    """(H, W, C) channel maps -> one grayscale (rows*(H+1)-1, cols*(W+1)-1) uint8 grid, channel c
    at row c // cols, column c % cols, 1 px gaps (mid-gray), values lo..hi as black..white."""
    return tile_grid(_gray(maps, lo, hi).transpose(2, 0, 1), columns, 128)


def diverging(a: np.ndarray, m: float) -> np.ndarray:
    """Values -> (..., 3) uint8 on a diverging scale: white at 0, red at +m, blue at -m."""
    t = np.clip(a / (m or 1.0), -1, 1)
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    return np.round(np.stack([255 - 215 * neg, 255 - 195 * (pos + neg), 255 - 215 * pos], axis=-1)).astype(np.uint8)


LEVELS = 255  # diverging levels: index 0 is -m, 127 zero, 254 +m; index GAP is the grids' gaps
GAP = 255
PALETTE = np.concatenate([diverging(np.linspace(-1, 1, LEVELS), 1.0), [[150, 150, 150]]]).astype(np.uint8)


def diverging_index(a: np.ndarray, m: float) -> np.ndarray:
    """Values -> uint8 indices into PALETTE (0: -m, 127: 0, 254: +m)."""
    return np.round((np.clip(a / (m or 1.0), -1, 1) + 1) * (LEVELS - 1) / 2).astype(np.uint8)


def paletted(index: np.ndarray) -> Image.Image:
    """Indices into PALETTE -> a one-byte-per-pixel PNG-ready picture (a third of RGB's bytes)."""
    im = Image.fromarray(index, "P")
    im.putpalette(PALETTE.ravel().tolist())
    return im


def grad_atlas(maps: np.ndarray, m: float, columns: int = MAP_COLUMNS) -> np.ndarray:
    """(H, W, C) gradient maps -> PALETTE indices laid out as map_atlas lays them, scale ±m."""
    return tile_grid(diverging_index(maps.transpose(2, 0, 1), m), columns, GAP)


def kernel_atlas(w: np.ndarray, m: float) -> np.ndarray:
    """A Conv2d's (kh, kw, C_in, C_out) weights (or their gradient) -> PALETTE indices, scale ±m:
    a row per output channel, its C_in kernels across (one input channel: 8 a row)."""
    kh, kw, c_in, c_out = w.shape
    tiles = diverging_index(w.transpose(3, 2, 0, 1).reshape(c_out * c_in, kh, kw), m)  # (C_out*C_in, kh, kw)
    return tile_grid(tiles, c_in if c_in > 1 else MAP_COLUMNS, GAP)


def saliency_rgba(saliency: np.ndarray) -> np.ndarray:
    """(H, W) gradient -> (H, W, 4) uint8: red where more ink raises the score, blue where it
    lowers it, opacity |g| / max |g|."""
    m = float(np.abs(saliency).max()) or 1.0
    a = saliency / m
    rgba = np.zeros((*a.shape, 4), np.uint8)
    rgba[..., 0] = np.where(a > 0, 255, 40)
    rgba[..., 1] = np.where(a > 0, 60, 120)
    rgba[..., 2] = np.where(a > 0, 40, 255)
    rgba[..., 3] = np.round(np.abs(a) * 255)
    return rgba


def absmax(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


def strongest_units(g: np.ndarray) -> np.ndarray:
    """A Linear's weights' gradient (in, out) -> the output units drawn: the MATRIX_ROWS with the
    largest sum of |gradient|, in order."""
    return np.sort(np.argsort(-np.abs(g).sum(axis=0), kind="stable")[:MATRIX_ROWS])
