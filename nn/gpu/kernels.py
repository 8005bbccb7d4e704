"""The GPU engine's CUDA kernels, as CuPy ElementwiseKernels (compiled on first use, cached).

The reference layers run on CuPy unchanged, but there each NumPy-style step is its own kernel
and a strided view becomes a generic (slow) copy: im2col's window view is a 6-D gather,
col2im nine strided scatter-adds, max pooling an argmax over a non-contiguous axis then a
mask as large as the input. Each kernel here does one of those jobs in one launch, with one
thread per OUTPUT element: a gather, never a scatter, so there are no atomics and the sums
run in a fixed order: same inputs, same bits, on every run.

Every image array is C-contiguous NHWC; `T` is its dtype (float32, or float64 in the tests).
Index arithmetic is 64-bit where a product can pass 2**31 (the batch axis).
"""

from __future__ import annotations

import functools

# Shared preamble: (n, row, column, channel) of flat index i in an (N, H, W, C) array.
_UNRAVEL = """
    long long t_ = i;
    const int c = t_ % C; t_ /= C;
    const int {col} = t_ % {width}; t_ /= {width};
    const int {row} = t_ % {height};
    const long long n = t_ / {height};
"""

_IM2COL = """
    // cols[r, k]: r = (n, oi, oj) output pixel, k = (a, b, c) kernel offset and channel
    const long long K = (long long)kh * kw * C;
    const long long r = i / K;
    const int k = i % K;
    const int c = k % C, b = (k / C) % kw, a = k / (C * kw);
    const int oj = r % Wo, oi = (r / Wo) % Ho;
    const long long n = r / ((long long)Wo * Ho);
    const int y = oi * sh + a - top, x = oj * sw + b - left;    // in the unpadded input
    col = (y >= 0 && y < H && x >= 0 && x < W) ? img[((n * H + y) * W + x) * C + c] : (T)0;
"""

_COL2IM = _UNRAVEL.format(row="y", col="x", height="H", width="W") + """
    // dx[n, y, x, c] = sum of dcols over every window (oi, oj) and offset (a, b) that read it,
    // a then b ascending: the order of the reference col2im's scatter-adds.
    const long long K = (long long)kh * kw * C;
    T s = 0;
    for (int a = 0; a < kh; ++a) {
        const int yy = y + top - a;                  // = oi * sh in padded coordinates
        if (yy < 0 || yy % sh) continue;
        const int oi = yy / sh;
        if (oi >= Ho) continue;
        for (int b = 0; b < kw; ++b) {
            const int xx = x + left - b;
            if (xx < 0 || xx % sw) continue;
            const int oj = xx / sw;
            if (oj >= Wo) continue;
            s += dcol[((n * Ho + oi) * Wo + oj) * K + (a * kw + b) * C + c];
        }
    }
    dx = s;
"""

_POOL_FORWARD = _UNRAVEL.format(row="oi", col="oj", height="Ho", width="Wo") + """
    // the window's maximum and its FIRST position in row-major order (strict >), as argmax
    const long long base = (n * H + (long long)oi * sh) * W + (long long)oj * sw;
    T best = img[base * C + c];
    int first = 0;
    for (int a = 0; a < kh; ++a)
        for (int b = 0; b < kw; ++b) {
            const T v = img[(base + (long long)a * W + b) * C + c];
            if (v > best) { best = v; first = a * kw + b; }
        }
    out = best;
    arg = first;
"""

_POOL_BACKWARD = _UNRAVEL.format(row="y", col="x", height="H", width="W") + """
    // dx[n, y, x, c]: the gradients of the windows whose first maximum is this pixel
    T s = 0;
    for (int a = 0; a < kh; ++a) {
        const int yy = y - a;
        if (yy < 0 || yy % sh) continue;
        const int oi = yy / sh;
        if (oi >= Ho) continue;
        for (int b = 0; b < kw; ++b) {
            const int xx = x - b;
            if (xx < 0 || xx % sw) continue;
            const int oj = xx / sw;
            if (oj >= Wo) continue;
            const long long o = ((n * Ho + oi) * Wo + oj) * C + c;
            if (arg[o] == a * kw + b) s += dout[o];
        }
    }
    dx = s;
"""

_SHAPE = "int32 H, int32 W, int32 C, int32 Ho, int32 Wo, int32 kh, int32 kw, int32 sh, int32 sw"

_ADAM = """
    // Adam / AdamW in one pass: decay = 1 - lr * wd (decoupled) else 1, wd = coupled L2 else 0;
    // step = lr * sqrt(1 - b2^t) / (1 - b1^t), eps_hat = eps * sqrt(1 - b2^t) (nn.optim.Adam)
    const T q = p * decay;
    const T gg = g + wd * q;
    m = b1 * m + (1 - b1) * gg;
    v = b2 * v + (1 - b2) * gg * gg;
    p = q - step * m / (sqrt(v) + eps_hat);
"""


@functools.cache
def kernels():
    """{name: cupy.ElementwiseKernel}: compiled by CuPy on first call of each."""
    import cupy

    ek = cupy.ElementwiseKernel
    return {
        "im2col": ek(f"raw T img, {_SHAPE}, int32 top, int32 left", "T col", _IM2COL, "nn_im2col"),
        "col2im": ek(f"raw T dcol, {_SHAPE}, int32 top, int32 left", "T dx", _COL2IM, "nn_col2im"),
        "pool_forward": ek(f"raw T img, {_SHAPE}", "T out, int32 arg", _POOL_FORWARD, "nn_pool_forward"),
        "pool_backward": ek(f"raw T dout, raw int32 arg, {_SHAPE}", "T dx", _POOL_BACKWARD,
                            "nn_pool_backward"),
        "relu_backward": ek("T dout, T out", "T dx", "dx = out > (T)0 ? dout : (T)0", "nn_relu_backward"),
        "adam": ek("T g, T decay, T wd, T b1, T b2, T step, T eps_hat", "T p, T m, T v", _ADAM, "nn_adam"),
    }


def im2col(x, kh, kw, sh, sw, pads, ho, wo):
    """x: (N, H, W, C) -> cols (N*Ho*Wo, kh*kw*C), zero padding written in place of a pad copy."""
    n, h, w, c = x.shape
    top, _, left, _ = pads
    cols = _empty(x, (n * ho * wo, kh * kw * c))
    kernels()["im2col"](x, h, w, c, ho, wo, kh, kw, sh, sw, top, left, cols)
    return cols


def col2im(dcols, x_shape, kh, kw, sh, sw, pads, ho, wo):
    """dcols (N*Ho*Wo, kh*kw*C) -> dx (N, H, W, C): the adjoint of `im2col`, as a gather."""
    n, h, w, c = x_shape
    top, _, left, _ = pads
    dx = _empty(dcols, x_shape)
    kernels()["col2im"](dcols, h, w, c, ho, wo, kh, kw, sh, sw, top, left, dx)
    return dx


def pool_forward(x, kh, kw, sh, sw, ho, wo):
    """x: (N, H, W, C) -> (max (N, Ho, Wo, C), first-maximum offset a*kw+b (N, Ho, Wo, C) int32)."""
    import cupy

    n, h, w, c = x.shape
    out = _empty(x, (n, ho, wo, c))
    arg = cupy.empty((n, ho, wo, c), cupy.int32)
    kernels()["pool_forward"](x, h, w, c, ho, wo, kh, kw, sh, sw, out, arg)
    return out, arg


def pool_backward(dout, arg, x_shape, kh, kw, sh, sw):
    """dout, arg: (N, Ho, Wo, C) -> dx (N, H, W, C), each gradient at its window's first maximum."""
    n, h, w, c = x_shape
    ho, wo = dout.shape[1:3]
    dx = _empty(dout, x_shape)
    kernels()["pool_backward"](dout, arg, h, w, c, ho, wo, kh, kw, sh, sw, dx)
    return dx


def _empty(like, shape):
    import cupy

    return cupy.empty(shape, like.dtype)
