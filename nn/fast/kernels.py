"""The engine's convolution / pooling kernels on NHWC arrays: im2col views, chunked matmuls, scratch buffers.

The layers in `nn.fast.layers` call these. The arithmetic is the reference layers' (`nn.layers`),
arranged so the large temporaries stay in cache and are never allocated twice.

"Pool layout": when a Conv2d's output goes (through BatchNorm2d / ReLU only) into a 2x2 stride-2
MaxPool2d, `FastSequential` asks the convolution to emit its rows per image in the order
(dy, dx, i, j) instead of (h, w) with h = 2i + dy, w = 2j + dx. The array then has shape
(N, 4, H/2 * W/2, C): each pooling window is the same position in four contiguous blocks, so the
pool is three `np.maximum` calls. BatchNorm and ReLU work per channel and do not care about the
order of the other axes. The values are bit-identical to the natural layout, only permuted.
"""

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nn.fast.threads import parallel as _parallel

# Output pixels (im2col rows) per chunk of images: small enough for the chunk's buffers to stay
# in cache, large enough that numpy's per-call overhead does not dominate (measured: docs/speed.md).
CHUNK_ROWS = 1024

# A narrow im2col row (kh*kw*C_in below NARROW_K numbers: a 3x3 convolution of one channel) is
# cheap, and its chunk's time goes to numpy's per-call overhead and the threads' hand-overs of
# the GIL: such convolutions take chunks NARROW_CHUNK_FACTOR times longer (docs/speed.md).
NARROW_K = 64
NARROW_CHUNK_FACTOR = 16


class Scratch:
    """Reusable scratch arrays, one per name: never returned to callers, so reuse is safe.

    Allocating the large temporaries afresh every step page-faults them in again each time.
    The first axis is a capacity: `get` returns the leading `n` rows of a buffer at least that big.
    """

    def __init__(self):
        self._bufs: dict[str, np.ndarray] = {}
        self._subs: dict[str, Scratch] = {}

    def get(self, name: str, n: int, shape: tuple, dtype) -> np.ndarray:
        buf = self._bufs.get(name)
        if buf is None or buf.shape[1:] != tuple(shape) or buf.dtype != dtype or buf.shape[0] < n:
            # Zero-filled once: padded buffers rely on borders that are never written.
            buf = np.zeros((n, *shape), dtype)
            self._bufs[name] = buf
        return buf[:n]

    def flat(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A contiguous array of this shape (uninitialised) in a reused buffer."""
        size = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.ndim != 1 or buf.size < size or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty(size, dtype)
        return buf[:size].reshape(shape)

    def sub(self, i: int) -> "Scratch":
        """A separate Scratch for worker thread i."""
        key = f"worker{i}"
        if key not in self._subs:
            self._subs[key] = Scratch()
        return self._subs[key]

    def clear(self):
        self._bufs.clear()
        self._subs.clear()


def windows(padded: np.ndarray, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int,
            pool_layout: bool) -> np.ndarray:
    """Read-only im2col view of a padded input.

    padded: (N, Hp, Wp, C) -> (N, ho, wo, kh, kw, C), or in pool layout (N, 2, 2, ho/2, wo/2, kh, kw, C).
    """
    n, _, _, c = padded.shape
    s_n, s_h, s_w, s_c = padded.strides
    if pool_layout:
        shape = (n, 2, 2, ho // 2, wo // 2, kh, kw, c)
        strides = (s_n, sh * s_h, sw * s_w, 2 * sh * s_h, 2 * sw * s_w, s_h, s_w, s_c)
    else:
        shape = (n, ho, wo, kh, kw, c)
        strides = (s_n, sh * s_h, sw * s_w, s_h, s_w, s_c)
    return as_strided(padded, shape, strides, writeable=False)


def fill_col(view: np.ndarray, n0: int, m: int, scratch: Scratch, name: str) -> np.ndarray:
    """Copy the windows of images n0 .. n0+m-1 into a reused buffer: the (rows, kh*kw*C) im2col matrix.

    view: from `windows`, its last three axes (kh, kw, C). With few channels the contiguous runs
    (kw*C numbers) are short, so the buffer is filled transposed, (kh*kw*C, rows), with long runs
    along the width instead (5x faster for C=1); matmul reads the transposed view without a copy.
    """
    win = view[n0:n0 + m]
    kh, kw, c = win.shape[-3:]
    k = kh * kw * c
    rows = win.size // k
    if kw * c >= 16:
        col = scratch.flat(name, win.shape, win.dtype)
        np.copyto(col, win)
        return col.reshape(rows, k)
    nd = win.ndim
    win_t = win.transpose(nd - 3, nd - 2, nd - 1, *range(nd - 3))
    col = scratch.flat(name, win_t.shape, win.dtype)
    np.copyto(col, win_t)
    return col.reshape(k, rows).T


def images_per_chunk(rows_per_image: int, n: int, k: int) -> int:
    """How many images of rows_per_image output pixels make a chunk of about CHUNK_ROWS rows
    (NARROW_CHUNK_FACTOR times that for an im2col width k below NARROW_K)."""
    rows = CHUNK_ROWS * (NARROW_CHUNK_FACTOR if k < NARROW_K else 1)
    return max(1, min(n, rows // rows_per_image))


def parallel(part, n: int, rows_per_image: int, k: int, scratch: Scratch) -> list:
    """`threads.parallel` over images, each thread getting at least one chunk."""
    return _parallel(part, n, images_per_chunk(rows_per_image, n, k), scratch)


def conv_matmul(padded: np.ndarray, w2d: np.ndarray, kh: int, kw: int, sh: int, sw: int,
                ho: int, wo: int, pool_layout: bool, scratch: Scratch, name: str,
                bias: np.ndarray | None = None) -> np.ndarray:
    """Correlate padded input with a kernel matrix, a few images at a time.

    padded: (N, Hp, Wp, C); w2d: (kh*kw*C, F) -> (N, ho*wo, F) in natural or pool row order.
    """
    n, c = padded.shape[0], padded.shape[3]
    k = kh * kw * c
    f = w2d.shape[1]
    rows = ho * wo
    out = np.empty((n, rows, f), dtype=np.result_type(padded, w2d))
    view = windows(padded, kh, kw, sh, sw, ho, wo, pool_layout)

    def part(lo, hi, scr):
        step = images_per_chunk(rows, hi - lo, k)
        for n0 in range(lo, hi, step):
            n1 = min(hi, n0 + step)
            o = out[n0:n1].reshape(-1, f)
            np.matmul(fill_col(view, n0, n1 - n0, scr, name), w2d, out=o)
            if bias is not None:
                o += bias

    parallel(part, n, rows, k, scratch)
    return out


def conv_weight_grad(padded: np.ndarray, dout: np.ndarray, kh: int, kw: int, sh: int, sw: int,
                     ho: int, wo: int, pool_layout: bool, scratch: Scratch, name: str) -> np.ndarray:
    """dW = col^T @ dout, rebuilding col chunk by chunk (cheaper than keeping it).

    padded: (N, Hp, Wp, C); dout: (N, ho*wo, F) in the forward's row order -> (kh*kw*C, F).
    """
    n, c = padded.shape[0], padded.shape[3]
    k = kh * kw * c
    f = dout.shape[-1]
    rows = ho * wo
    view = windows(padded, kh, kw, sh, sw, ho, wo, pool_layout)
    dtype = np.result_type(padded, dout)

    def part(lo, hi, scr):
        step = images_per_chunk(rows, hi - lo, k)
        dw = np.zeros((k, f), dtype)
        tmp = np.empty_like(dw)
        for n0 in range(lo, hi, step):
            n1 = min(hi, n0 + step)
            col = fill_col(view, n0, n1 - n0, scr, name)
            np.matmul(col.T, dout[n0:n1].reshape(-1, f), out=tmp)
            dw += tmp
        return dw

    parts = parallel(part, n, rows, k, scratch)
    for dw_i in parts[1:]:  # fixed order: deterministic
        parts[0] += dw_i
    return parts[0]


def unpool_layout(a: np.ndarray, ho: int, wo: int) -> np.ndarray:
    """View of a natural (N, ho, wo, C) array indexed like the pool layout (N, 2, 2, ho/2, wo/2, C)."""
    n, c = a.shape[0], a.shape[-1]
    return a.reshape(n, ho // 2, 2, wo // 2, 2, c).transpose(0, 2, 4, 1, 3, 5)


def max4(ys: np.ndarray, out: np.ndarray, masks: np.ndarray | None, tmp: np.ndarray) -> None:
    """Max over the 4 blocks of a pool-layout array, recording which one won, first maximum first.

    ys: (N, 4, P, C) -> out (N, P, C). masks (3, N, P, C) bool, if given, receives
    a = y1 > y0, c = y3 > y2 and d = max(y2, y3) > max(y0, y1): the winner is 2 + c if d else a.
    Strict comparisons make an equal later value lose, so ties go to the first position in
    row-major window order, as PyTorch. tmp: (N, P, C) scratch.
    """
    np.maximum(ys[:, 0], ys[:, 1], out=out)
    np.maximum(ys[:, 2], ys[:, 3], out=tmp)
    if masks is not None:
        np.greater(ys[:, 1], ys[:, 0], out=masks[0])
        np.greater(ys[:, 3], ys[:, 2], out=masks[1])
        np.greater(tmp, out, out=masks[2])
    np.maximum(out, tmp, out=out)


def route4(g: np.ndarray, masks: np.ndarray, ys: np.ndarray) -> None:
    """Backward of `max4`: each gradient to its one recorded maximum. g: (N, P, C) -> ys (N, 4, P, C).

    g * mask and g - g * mask are exactly g or 0, so the routing adds no rounding.
    """
    a, c, d = masks
    np.multiply(g, d, out=ys[:, 2])  # the share of the lower pair (2, 3)
    np.subtract(g, ys[:, 2], out=ys[:, 0])  # the share of the upper pair (0, 1)
    np.multiply(ys[:, 2], c, out=ys[:, 3])
    np.subtract(ys[:, 2], ys[:, 3], out=ys[:, 2])
    np.multiply(ys[:, 0], a, out=ys[:, 1])
    np.subtract(ys[:, 0], ys[:, 1], out=ys[:, 0])


def conv_pool_forward(padded: np.ndarray, w2d: np.ndarray, bias: np.ndarray | None, kh: int, kw: int,
                      ho: int, wo: int, relu: bool, need_index: bool, scratch: Scratch):
    """Stride-1 Conv2d (+ ReLU) + 2x2 MaxPool, a few images at a time so everything stays in cache.

    padded: (N, Hp, Wp, C) input; w2d: (kh*kw*C, F) -> out (N, P, F) with P = ho/2 * wo/2, and
    masks (3, N, P, F) bool recording the first maximum of each window (see `max4`).
    Bit-identical to the unfused layers: bias is added before the max, ReLU after (they commute
    exactly with max), and ties keep the first maximum as the unfused pool does.
    """
    n = padded.shape[0]
    k, f = w2d.shape
    p = (ho // 2) * (wo // 2)
    dtype = np.result_type(padded, w2d)
    out = np.empty((n, p, f), dtype)
    masks = np.empty((3, n, p, f), np.bool_) if need_index else None
    view = windows(padded, kh, kw, 1, 1, ho, wo, True)

    def part(lo, hi, scr):
        step = images_per_chunk(ho * wo, hi - lo, k)
        y = scr.get("y", step, (4, p, f), dtype)
        tmp = scr.get("g", step, (p, f), dtype)
        for n0 in range(lo, hi, step):
            m = min(hi, n0 + step) - n0
            ys, o = y[:m], out[n0:n0 + m]
            np.matmul(fill_col(view, n0, m, scr, "col"), w2d, out=ys.reshape(-1, f))
            if bias is not None:
                ys += bias
            max4(ys, o, None if masks is None else masks[:, n0:n0 + m], tmp[:m])
            if relu:
                np.maximum(o, 0, out=o)

    parallel(part, n, ho * wo, k, scratch)
    return out, masks


def conv_pool_backward(padded: np.ndarray, dout: np.ndarray, out: np.ndarray, masks: np.ndarray,
                       w2d: np.ndarray, w_flip: np.ndarray | None, kh: int, kw: int, ho: int, wo: int,
                       pads: tuple, relu: bool, scratch: Scratch):
    """Backward of `conv_pool_forward`: per chunk, mask by ReLU and route to the recorded maxima,
    then the convolution's backward (`conv_backward`).

    dout, out: (N, P, F); masks: (3, N, P, F) -> dW (kh*kw*C, F), db (F,), dx (N, H, W, C) or None.
    """
    p, f = out.shape[1:]

    def routed(n0, m, scr):
        y = scr.get("y", m, (4, p, f), dout.dtype)
        g = scr.get("g", m, (p, f), dout.dtype)
        if relu:
            mask = scr.get("gt", m, (p, f), np.bool_)
            np.greater(out[n0:n0 + m], 0, out=mask)
            np.multiply(dout[n0:n0 + m], mask, out=g)
        else:
            np.copyto(g, dout[n0:n0 + m])
        route4(g, masks[:, n0:n0 + m], y)
        return y.reshape(m, 4 * p, f)

    return conv_backward(padded, routed, w2d, w_flip, kh, kw, ho, wo, pads, True, scratch)


def conv_backward(padded: np.ndarray, dy_chunk, w2d: np.ndarray, w_flip: np.ndarray | None, kh: int,
                  kw: int, ho: int, wo: int, pads: tuple, pool_layout: bool, scratch: Scratch):
    """Stride-1 convolution backward, chunk by chunk: dW and db accumulate, and (if w_flip is
    given) dx is the correlation of the padded output gradient with the flipped kernels.

    dy_chunk(n0, m, scratch) -> (m, ho*wo, F): the output gradient of images n0..n0+m-1 in the
    forward's row order (natural or pool layout). w_flip: (kh*kw*F, C).
    -> dW (kh*kw*C, F), db (F,), dx (N, H, W, C) or None.
    """
    n, hp, wp, c = padded.shape
    k, f = w2d.shape
    h, w = hp - pads[0] - pads[1], wp - pads[2] - pads[3]
    dtype = np.result_type(padded, w2d)
    view = windows(padded, kh, kw, 1, 1, ho, wo, pool_layout)
    dx = None if w_flip is None else np.empty((n, h, w, c), dtype)
    ft, fl = kh - 1 - pads[0], kw - 1 - pads[2]
    # An output smaller than the input (little or no padding): the correlation below would build
    # (h*w) x (kh*kw*F) windows of an output gradient padded with kh - 1 rows of zeros all round.
    # col2im instead: each output pixel's gradient times the kernel matrix, (ho*wo, F) @
    # (F, kh*kw*C), the forward's multiply-adds, each window's row added back where it came
    # from: a 2.9x smaller matrix for the default CNN's second convolution (12x12 -> 10x10).
    col2im = dx is not None and h * w > ho * wo

    def part(lo, hi, scr):
        step = images_per_chunk(ho * wo, hi - lo, k)
        ones = np.ones(step * ho * wo, dtype)
        dw = np.zeros((k, f), dtype)
        db = np.zeros(f, dtype)
        tmp = np.empty((k, f), dtype)
        if col2im:
            natural = scr.get("dynat", step, (ho, wo, f), dtype) if pool_layout else None
            dcol = scr.get("dcol2im", step, (ho, wo, kh, kw, c), dtype)
            dxp = scr.get("dxpad", step, (hp, wp, c), dtype)
        elif dx is not None:
            dp = scr.get("dpad", step, (h + kh - 1, w + kw - 1, f), dtype)
            dview = windows(dp, kh, kw, 1, 1, h, w, False)
        for n0 in range(lo, hi, step):
            m = min(hi, n0 + step) - n0
            dy = dy_chunk(n0, m, scr)
            dy2 = dy.reshape(-1, f)
            db += ones[:dy2.shape[0]] @ dy2
            np.matmul(fill_col(view, n0, m, scr, "col").T, dy2, out=tmp)
            dw += tmp
            if col2im:
                if pool_layout:
                    np.copyto(unpool_layout(natural[:m], ho, wo), dy.reshape(m, 2, 2, ho // 2, wo // 2, f))
                    dy2 = natural[:m].reshape(-1, f)
                np.matmul(dy2, w2d.T, out=dcol[:m].reshape(-1, k))
                dxp[:m] = 0
                for a in range(kh):
                    for b in range(kw):
                        dxp[:m, a:a + ho, b:b + wo] += dcol[:m, :, :, a, b]
                np.copyto(dx[n0:n0 + m], dxp[:m, pads[0]:pads[0] + h, pads[2]:pads[2] + w])
            elif dx is not None:
                inner = dp[:m, ft:ft + ho, fl:fl + wo]
                if pool_layout:
                    np.copyto(unpool_layout(inner, ho, wo), dy.reshape(m, 2, 2, ho // 2, wo // 2, f))
                else:
                    np.copyto(inner, dy.reshape(m, ho, wo, f))
                np.matmul(fill_col(dview, 0, m, scr, "dcol"), w_flip, out=dx[n0:n0 + m].reshape(-1, c))
        return dw, db

    parts = parallel(part, n, ho * wo, k, scratch)
    dw, db = parts[0]
    for dw_i, db_i in parts[1:]:  # fixed order: deterministic
        dw += dw_i
        db += db_i
    return dw, db, dx
