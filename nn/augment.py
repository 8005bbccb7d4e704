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
    n = len(x)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    if array_module(x) is not np:
        return shift_gather(x, shifts, fill)
    out = np.full_like(x, fill)
    code = (shifts[:, 0] + max_shift) * (2 * max_shift + 1) + (shifts[:, 1] + max_shift)
    for c in np.unique(code):
        idx = np.flatnonzero(code == c)
        paste_shifted(out, x, *shifts[idx[0]], idx)
    return out


def paste_shifted(out: np.ndarray, x: np.ndarray, dy: int, dx: int, images=slice(None)) -> None:
    """Write x's `images` (an index or a slice of the first axis) into the same images of out,
    moved down by dy and right by dx pixels; what moves in from outside keeps out's values."""
    h, w = x.shape[1:3]
    out[images, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[images, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]


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


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) G with G @ v = v convolved with a Gaussian of std `sigma` (truncated at ⌈4 sigma⌉),
    zeros beyond the ends: the 1-D smoothing of `elastic_field`, as a matrix product."""
    r = np.ceil(4 * sigma)
    kernel_sum = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).sum()
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    return np.exp(-0.5 * (d / sigma) ** 2) * (np.abs(d) <= r) / kernel_sum


def elastic_field(rng: np.random.Generator, n: int, h: int, w: int, alpha: float,
                  sigma: float) -> np.ndarray:
    """Simard et al. (2003)'s elastic distortion: (N, 2, H, W) pixel displacements (rows,
    columns), each a field of U[-1, 1] noise smoothed by a Gaussian of std `sigma` pixels and
    scaled by `alpha`. Small sigma gives random jitter; large sigma, nearly a translation."""
    u = rng.random((n, 2, h, w), dtype=np.float32)      # U[0, 1); the noise is 2u - 1
    gy, gx = alpha * gaussian_matrix(h, sigma), gaussian_matrix(w, sigma).T
    # Gy (2u - 1) Gx = 2 Gy u Gx - (Gy 1)(1ᵀ Gx): the constant term is one H x W matrix, taken
    # from the products once rather than a pass over the noise to shift it
    field = (2 * gy).astype(np.float32) @ u @ gx.astype(np.float32)
    field -= np.outer(gy.sum(axis=1), gx.sum(axis=0)).astype(np.float32)
    return field


def random_warp(x: np.ndarray, rng: np.random.Generator, rotate: float = 0.0, scale: float = 0.0,
                shear: float = 0.0, fill: float = 0.0, elastic: float = 0.0,
                elastic_sigma: float = 4.0, max_shift: int = 0) -> np.ndarray:
    """Each image moved by its own whole-pixel shift, through its own random affine map about
    its centre, then its own elastic distortion, bilinearly resampled in one pass.

    x: (N, H, W, C) -> (N, H, W, C), a new array. Per image, drawn on the host from `rng` (so a
    seed gives the same maps on every device): a shift (dy, dx) in [-max_shift, max_shift]^2
    (drawn first, as `random_shift` draws it), a rotation by θ ~ U[-rotate, rotate] degrees, a
    scale s ~ U[1 - scale, 1 + scale] and a horizontal shear by φ ~ U[-shear, shear] degrees.
    The forward map is A = R(θ) · [[1, 0], [tan φ, 1]] · s (on (row, column) offsets from the
    centre); each output pixel reads the shifted input at A⁻¹ of its offset, moved by the
    pixel's displacement from `elastic_field(alpha=elastic, sigma=elastic_sigma)` when
    `elastic` > 0, interpolated from its four neighbours, with `fill` (the background) outside
    the image. The shift is folded into the resampling (the input read at that point minus
    (dy, dx)); with no warp this is `random_shift` (x itself when max_shift is 0 too).
    """
    if not (rotate or scale or shear or elastic):
        return random_shift(x, max_shift, rng, fill)
    xp = array_module(x)
    n, h, w = x.shape[:3]
    shift = rng.integers(-max_shift, max_shift + 1, size=(n, 2)) if max_shift else None
    inv, field = draw_maps(rng, n, h, w, rotate, scale, shear, elastic, elastic_sigma)
    inv, field = xp.asarray(inv), None if field is None else xp.asarray(field)
    shift = None if shift is None else xp.asarray(shift.astype(np.float32))
    if xp is not np:  # on a GPU, one pass over the whole batch: few kernel launches
        return resample(x, inv, field, fill, shift)
    # On the CPU, a few images at a time: the pass's temporaries then stay in cache
    # (benchmarks/README.md). The chunks shared out over two threads were slower: their
    # many small NumPy calls queue for the GIL. Every step is per pixel, so the result is the
    # same bytes however the chunks are run.
    return resample_in_chunks(x, inv, field, fill, shift)


def resample_in_chunks(x: np.ndarray, inv: np.ndarray, field, fill: float, shift=None) -> np.ndarray:
    """`resample` of NumPy images `WARP_CHUNK_PIXELS` at a time: the same bytes as one pass."""
    n, h, w = x.shape[:3]
    out = np.empty_like(x)
    step = max(1, WARP_CHUNK_PIXELS // (h * w))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        out[lo:hi] = resample(x[lo:hi], inv[lo:hi], None if field is None else field[lo:hi], fill,
                              None if shift is None else shift[lo:hi])
    return out


def tile_cut(x, parts: int):
    """(N, H, parts*W, C) -> (N*parts, H, W, C): each image's side-by-side tiles as their own
    images, image n's tile j at row n*parts + j, as `nn.layers.Tiles` cuts them."""
    n, h, w, c = x.shape
    x = x.reshape(n, h, parts, w // parts, c).transpose(0, 2, 1, 3, 4)
    return x.reshape(n * parts, h, w // parts, c)


def tile_join(x, parts: int):
    """`tile_cut`'s inverse: (N*parts, H, W, C) -> (N, H, parts*W, C)."""
    m, h, w, c = x.shape
    return x.reshape(m // parts, parts, h, w, c).transpose(0, 2, 1, 3, 4).reshape(m // parts, h, parts * w, c)


def affine_view(x: np.ndarray, dy: int, dx: int, degrees: float, size: float, fill: float
                ) -> np.ndarray:
    """Every image of x (N, H, W, C) moved by (dy, dx) pixels and through one affine map about
    its centre, rotated by `degrees` and scaled by `size`, as `random_warp` would with those
    draws (no shear, no elastic field); a new array. A pure shift is a copy, no interpolation."""
    if degrees == 0 and size == 1:
        out = np.full_like(x, fill)
        paste_shifted(out, x, dy, dx)
        return out
    theta = np.deg2rad(degrees)
    inv = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]]) / size
    n = len(x)
    inv = np.broadcast_to(inv.astype(np.float32), (n, 2, 2))
    shift = np.broadcast_to(np.array([dy, dx], np.float32), (n, 2))
    return resample_in_chunks(x, inv, None, fill, shift)


def draw_maps(rng: np.random.Generator, n: int, h: int, w: int, rotate: float, scale: float,
              shear: float, elastic: float, elastic_sigma: float):
    """`random_warp`'s random draws for n images of H x W, on the host: A⁻¹ (N, 2, 2) float32
    per image, and the elastic displacements (N, 2, H, W) float32, or None without `elastic`."""
    theta = np.deg2rad(rng.uniform(-rotate, rotate, n))
    s = rng.uniform(1 - scale, 1 + scale, n)
    phi = np.deg2rad(rng.uniform(-shear, shear, n))
    # A⁻¹ = (1/s) · [[1, 0], [-tan φ, 1]] · R(-θ)
    cos, sin, t = np.cos(theta), np.sin(theta), np.tan(phi)
    inv = np.empty((n, 2, 2))
    inv[:, 0, 0], inv[:, 0, 1] = cos, sin
    inv[:, 1, 0], inv[:, 1, 1] = -t * cos - sin, -t * sin + cos
    inv /= s[:, None, None]
    field = elastic_field(rng, n, h, w, elastic, elastic_sigma) if elastic else None
    return inv.astype(np.float32), field


# Pixels (images x H x W) that `random_warp` resamples at a time on the CPU.
WARP_CHUNK_PIXELS = 32 * 28 * 28


def resample(x, inv, field, fill: float, shift=None):
    """Bilinear resampling of each image at A⁻¹ of each output pixel's offset from the centre,
    plus its displacement, minus its image's shift: the pixel work of `random_warp`, on any
    array module.

    x: (N, H, W, C); inv: (N, 2, 2) float32, A⁻¹ per image; field: (N, 2, H, W) displacements
    (rows, columns) or None; shift: (N, 2) float32 (rows, columns) or None -> (N, H, W, C),
    `fill` where a pixel reads from outside the image.
    """
    xp = array_module(x)
    n, h, w, c = x.shape
    hp, wp = h + 3, w + 3  # the images padded with the fill: 1 row and column before, 2 after
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dy = (xp.arange(h, dtype=np.float32) - cy)[None, :, None]                # (1, H, 1)
    dx = (xp.arange(w, dtype=np.float32) - cx)[None, None, :]                # (1, 1, W)
    src_y = inv[:, 0, 0, None, None] * dy + inv[:, 0, 1, None, None] * dx    # (N, H, W)
    src_x = inv[:, 1, 0, None, None] * dy + inv[:, 1, 1, None, None] * dx
    if field is not None:
        src_y += field[:, 0]
        src_x += field[:, 1]
    if shift is None:  # from the centre into the padded image
        src_y += cy + 1
        src_x += cx + 1
    else:
        src_y += (cy + 1 - shift[:, 0])[:, None, None]
        src_x += (cx + 1 - shift[:, 1])[:, None, None]
    # Clamped to [0, H + 1] x [0, W + 1]: a pixel that lands outside the image then reads only
    # fill, and every tap is inside the padded image.
    xp.clip(src_y, 0, h + 1, out=src_y)
    xp.clip(src_x, 0, w + 1, out=src_x)
    y0, x0 = xp.floor(src_y), xp.floor(src_x)
    fy, fx = (src_y - y0).reshape(-1, 1), (src_x - x0).reshape(-1, 1)      # (N*H*W, 1)
    y0 *= wp
    y0 += x0  # the top-left tap's place in its padded image, exact in float32
    base = y0.astype(np.intp)
    base += (xp.arange(n, dtype=np.intp) * (hp * wp))[:, None, None]
    base = base.reshape(-1)
    padded = xp.full((n, hp, wp, c), fill, x.dtype)
    padded[:, 1:h + 1, 1:w + 1] = x
    padded = padded.reshape(n * hp * wp, c)                                 # (N*Hp*Wp, C)

    def tap(offset):  # the padded images at base + offset: (N*H*W, C); one index array for all
        return xp.take(padded[offset:], base, axis=0)

    # each lerp a + (b - a) f, in place on the fresh gathers
    top, right = tap(0), tap(1)
    right -= top
    right *= fx
    top += right
    bottom, right = tap(wp), tap(wp + 1)
    right -= bottom
    right *= fx
    bottom += right
    bottom -= top
    bottom *= fy
    top += bottom
    return top.reshape(x.shape)
