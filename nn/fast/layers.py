"""The engine's layers: the reference layers' math, rearranged for speed on the CPU.

Each class subclasses its reference layer in `nn.layers` (same constructor, parameters, spec
and name) and overrides only `forward`/`backward`. What changes is how the arithmetic is done:
  * convolutions copy im2col rows into reused scratch buffers a chunk of images at a time and
    run each chunk's matmul on its own thread (`nn.fast.kernels`, `nn.fast.threads`);
  * dx of a stride-1 convolution is a correlation of the padded output gradient with the
    flipped kernels (one matmul, no scatter-add);
  * a Conv2d can emit its output in "pool layout" so that a following 2x2 MaxPool2d is three
    `np.maximum` calls, or run fused with its ReLU and pool (`forward_pool`); `FastSequential`
    decides when;
  * Linear and BatchNorm split their rows over the threads inside a CNN's pass;
  * `backward(dout, input_grad=False)` skips dx for the first layer of a model;
  * gradients go into the buffers `FastSequential` hands out (`_Grads`), views into one flat
    array that `nn.fast.optim` updates in a few passes.
ReLU, Dropout, Flatten, OuterSum, Tiles and Untile have nothing to gain and are the reference
classes themselves.
`tests/test_fast.py` holds every path here to the reference layers.
"""

import functools

import numpy as np

from nn import layers as ref
from nn.fast import kernels, threads


class _Grads:
    """Gradients written into `grad_buffers` (name -> array, set by FastSequential: views into
    its flat gradient buffer) where shape and dtype fit, into fresh arrays otherwise. As in the
    reference, `grads` hold the last backward's gradients; here a backward overwrites them."""

    grad_buffers: dict[str, np.ndarray] = {}

    def _grad_out(self, name: str, shape: tuple, dtype) -> np.ndarray:
        buf = self.grad_buffers.get(name)
        if buf is not None and buf.shape == tuple(shape) and buf.dtype == dtype:
            return buf
        return np.empty(shape, dtype)

    def _set_grad(self, name: str, value: np.ndarray) -> None:
        out = self._grad_out(name, value.shape, value.dtype)
        if out is not value:
            np.copyto(out, value)
        self.grads[name] = out


class Linear(_Grads, ref.Linear):
    __doc__ = ref.Linear.__doc__

    def forward(self, x, training):
        self._check_input(x)
        w = self.params["W"]
        out = np.empty((x.shape[0], w.shape[1]), np.result_type(x, w))

        def rows(lo, hi):
            np.matmul(x[lo:hi], w, out=out[lo:hi])
            if "b" in self.params:
                out[lo:hi] += self.params["b"]

        threads.parallel_rows(rows, x.shape[0], x.shape[0] * w.size // 8 if threads.split_matmuls() else 0)
        self.cache = x if training else None
        return out

    def backward(self, dout, input_grad=True):
        x = self._need_cache()
        w = self.params["W"]
        dw = self._grad_out("W", w.shape, np.result_type(x, dout))
        # split over threads only inside a CNN's one-thread-BLAS pass, for products from 2^22
        # multiply-adds up (threads.parallel_rows splits from 2^19 "numbers")
        size = x.shape[0] * w.size // 8 if threads.split_matmuls() else 0

        def in_rows(lo, hi):  # rows of W: independent slices of x.T @ dout
            np.matmul(x[:, lo:hi].T, dout, out=dw[lo:hi])

        threads.parallel_rows(in_rows, w.shape[0], size)
        self.grads["W"] = dw
        if "b" in self.params:
            self.grads["b"] = dout.sum(axis=0, out=self._grad_out("b", dout.shape[1:], dout.dtype))
        if not input_grad:
            return None
        dx = np.empty(x.shape, dw.dtype)
        threads.parallel_rows(lambda lo, hi: np.matmul(dout[lo:hi], w.T, out=dx[lo:hi]), x.shape[0], size)
        return dx


class Conv2d(_Grads, ref.Conv2d):
    __doc__ = ref.Conv2d.__doc__

    @functools.cached_property
    def _scratch(self) -> kernels.Scratch:
        return kernels.Scratch()

    def _pad(self, x):
        """x: (N, H, W, C) -> zero-padded (N, H + top + bottom, W + left + right, C) in a reused buffer."""
        self._check_input(x)
        n, h, w, c = x.shape
        top, bottom, left, right = self.pads
        dtype = np.result_type(x, self.params["W"])
        if not (top or bottom or left or right):
            return np.ascontiguousarray(x, dtype=dtype)
        padded = self._scratch.get("padded", n, (h + top + bottom, w + left + right, c), dtype)
        padded[:, top:top + h, left:left + w] = x
        return padded

    @property
    def fast_ok(self) -> bool:
        """Whether the engine's kernels apply: stride 1, padding smaller than the kernel (dx is then
        a correlation with the flipped kernels). Other convolutions run the reference math."""
        top, bottom, left, right = self.pads
        return (self.sh, self.sw) == (1, 1) and max(top, bottom) < self.kh and max(left, right) < self.kw

    def _w_flip(self):
        wt = self.params["W"]  # (kh, kw, C_in, C_out) -> (kh*kw*C_out, C_in), kernels rotated 180 degrees
        return np.ascontiguousarray(wt[::-1, ::-1].transpose(0, 1, 3, 2).reshape(-1, wt.shape[2]))

    def can_pool(self, input_shape: tuple) -> bool:
        """Whether this convolution can feed a 2x2 pool directly (`pool_layout`, `forward_pool`)."""
        ho, wo, _ = self.output_shape(input_shape)
        return self.fast_ok and ho % 2 == 0 and wo % 2 == 0

    def forward(self, x, training, pool_layout: bool = False):
        """`pool_layout=True` (set by FastSequential only) emits (N, 4, H_out/2 * W_out/2, C_out):
        see `nn.fast.kernels`. Needs `can_pool`."""
        if not self.fast_ok:
            out = super().forward(x, training)
            self.cache = ("reference", self.cache) if training else None
            return out
        n, h, w, _ = x.shape
        ho, wo = self._out_hw(h, w)
        padded = self._pad(x)
        wt = self.params["W"]
        out = kernels.conv_matmul(padded, wt.reshape(-1, wt.shape[3]), self.kh, self.kw, self.sh, self.sw,
                                  ho, wo, pool_layout, self._scratch, "col", self.params.get("b"))
        self.cache = ("conv", padded, ho, wo, pool_layout) if training else None
        if pool_layout:
            return out.reshape(n, 4, (ho // 2) * (wo // 2), -1)
        return out.reshape(n, ho, wo, -1)

    def forward_pool(self, x, training, relu: bool):
        """This convolution, then ReLU if `relu`, then MaxPool2d(2), fused chunk by chunk.
        Needs `can_pool`. x: (N, H, W, C_in) -> (N, H_out/2, W_out/2, C_out)."""
        n, h, w, _ = x.shape
        ho, wo = self._out_hw(h, w)
        padded = self._pad(x)
        wt = self.params["W"]
        out, masks = kernels.conv_pool_forward(padded, wt.reshape(-1, wt.shape[3]), self.params.get("b"),
                                               self.kh, self.kw, ho, wo, relu, training, self._scratch)
        self.cache = ("pool", padded, ho, wo, out, masks, relu) if training else None
        return out.reshape(n, ho // 2, wo // 2, -1)

    def backward(self, dout, input_grad=True):
        cache = self._need_cache()
        if cache[0] == "reference":
            self.cache = cache[1]
            dx = super().backward(dout)
            for k, g in list(self.grads.items()):
                self._set_grad(k, g)
            return dx
        wt = self.params["W"]
        f = wt.shape[3]
        w_flip = self._w_flip() if input_grad else None
        if cache[0] == "pool":
            _, padded, ho, wo, out, masks, relu = cache
            dw, db, dx = kernels.conv_pool_backward(
                padded, np.ascontiguousarray(dout).reshape(out.shape), out, masks, wt.reshape(-1, f), w_flip,
                self.kh, self.kw, ho, wo, self.pads, relu, self._scratch)
        else:
            _, padded, ho, wo, pool_layout = cache
            dout = np.ascontiguousarray(dout).reshape(padded.shape[0], ho * wo, f)
            dw, db, dx = kernels.conv_backward(padded, lambda n0, m, scr: dout[n0:n0 + m], wt.reshape(-1, f),
                                               w_flip, self.kh, self.kw, ho, wo, self.pads, pool_layout,
                                               self._scratch)
        self._set_grad("W", dw.reshape(wt.shape))
        if "b" in self.params:
            self._set_grad("b", db)
        return dx


class MaxPool2d(ref.MaxPool2d):
    __doc__ = ref.MaxPool2d.__doc__

    @property
    def is_2x2(self) -> bool:
        return (self.kh, self.kw, self.sh, self.sw) == (2, 2, 2, 2)

    def forward(self, x, training, pool_layout_hw: tuple[int, int] | None = None):
        """`pool_layout_hw=(H, W)` (set by FastSequential only): x is a 2x2 pool-layout array
        (N, 4, H/2 * W/2, C) from a Conv2d, see `nn.fast.kernels`."""
        if pool_layout_hw is not None:
            h, w = pool_layout_hw
            n, _, p, c = x.shape
            out = np.empty((n, p, c), x.dtype)
            tmp = np.empty_like(out)
            masks = np.empty((3, n, p, c), np.bool_) if training else None
            threads.parallel_rows(lambda lo, hi: kernels.max4(x[lo:hi], out[lo:hi], None if masks is None
                                                              else masks[:, lo:hi], tmp[lo:hi]), n, x.size)
            self.cache = ("blocks", masks, x.shape) if training else None
            return out.reshape(n, h // 2, w // 2, c)
        n, h, w, c = x.shape
        ho, wo = self._out_hw(h, w)
        kh, kw, sh, sw = self.kh, self.kw, self.sh, self.sw

        def window(a, b, arr):  # the (a, b) element of every window: (N, ho, wo, C)
            return arr[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw]

        out = window(0, 0, x).copy()
        idx = np.zeros(out.shape, np.uint8 if kh * kw <= 256 else np.int32) if training else None
        for a in range(kh):
            for b in range(kw):
                if a == 0 and b == 0:
                    continue
                v = window(a, b, x)
                if training:
                    np.copyto(idx, a * kw + b, where=v > out)  # strict: the first maximum wins
                np.maximum(out, v, out=out)
        self.cache = ("windows", idx, x.shape, window) if training else None
        return out

    def backward(self, dout):
        cache = self._need_cache()
        if cache[0] == "blocks":
            _, masks, x_shape = cache
            n, _, p, c = x_shape
            dx = np.empty(x_shape, dout.dtype)
            g = np.ascontiguousarray(dout).reshape(n, p, c)
            threads.parallel_rows(lambda lo, hi: kernels.route4(g[lo:hi], masks[:, lo:hi], dx[lo:hi]),
                                  n, dx.size)
            return dx
        _, idx, x_shape, window = cache
        dx = np.zeros(x_shape, dout.dtype)
        for a in range(self.kh):
            for b in range(self.kw):
                window(a, b, dx)[...] += dout * (idx == a * self.kw + b)
        return dx


def _channel_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the rows of (M, C) as one BLAS product: 4x faster than a.sum(axis=0), whose
    sequential float32 accumulation is also less accurate."""
    return np.ones(a.shape[0], a.dtype) @ a


class _FastBatchNorm(_Grads):
    """BatchNorm's passes over (M, C) rows, each split over row ranges run on all cores
    (memory-bound work), with per-channel sums as BLAS products."""

    def forward(self, x, training):
        self._check_input(x, training)
        c = self._spec["num_features"]
        gamma, beta = self.params["gamma"], self.params["beta"]
        x2 = x.reshape(-1, c)  # (M, C): channels are the contiguous axis
        m = x2.shape[0]
        out = np.empty(x2.shape, np.result_type(x2, gamma))
        rows = functools.partial(threads.parallel_rows, m=m, size=x2.size)
        if not training:
            inv_std = 1 / np.sqrt(self.buffers["running_var"] + self.eps)
            scale = gamma * inv_std
            shift = beta - self.buffers["running_mean"] * scale

            def apply(lo, hi):
                np.multiply(x2[lo:hi], scale, out=out[lo:hi])
                out[lo:hi] += shift

            rows(apply)
            self.cache = None
            return out.reshape(x.shape)
        mean = sum(rows(lambda lo, hi: _channel_sum(x2[lo:hi]))) / m

        def centre(lo, hi):  # out = x - mean; returns the partial sum of squares (no cancellation)
            np.subtract(x2[lo:hi], mean, out=out[lo:hi])
            return np.einsum("ij,ij->j", out[lo:hi], out[lo:hi])

        var = sum(rows(centre)) / m
        inv_std = 1 / np.sqrt(var + self.eps)
        scale = gamma * inv_std

        def apply(lo, hi):
            out[lo:hi] *= scale
            out[lo:hi] += beta

        rows(apply)
        self._update_running(mean, var, m)
        self.cache = (x2, mean, inv_std, x.shape)  # x2 is the previous layer's output: no copy
        return out.reshape(x.shape)

    def backward(self, dout):
        x2, mean, inv_std, shape = self._need_cache()
        m, c = x2.shape
        d2 = dout.reshape(m, c)
        rows = functools.partial(threads.parallel_rows, m=m, size=x2.size)
        dx = np.empty(d2.shape, np.result_type(d2, x2))

        def sums(lo, hi):  # dx holds x - mean for now
            np.subtract(x2[lo:hi], mean, out=dx[lo:hi])
            return _channel_sum(d2[lo:hi]), np.einsum("ij,ij->j", d2[lo:hi], dx[lo:hi])

        parts = rows(sums)
        dbeta = sum(p[0] for p in parts)
        dgamma = sum(p[1] for p in parts) * inv_std
        self._set_grad("gamma", dgamma)
        self._set_grad("beta", dbeta)
        # dx = gamma/sigma * (dout - mean(dout) - xhat * mean(dout * xhat)), xhat = (x - mean)/sigma
        k = self.params["gamma"] * inv_std
        coef = -k * inv_std * dgamma / m
        shift = -k * dbeta / m

        def apply(lo, hi):
            t = dx[lo:hi]
            t *= coef
            t += shift
            t += d2[lo:hi] * k

        rows(apply)
        return dx.reshape(shape)


class BatchNorm1d(_FastBatchNorm, ref.BatchNorm1d):
    __doc__ = ref.BatchNorm1d.__doc__


class BatchNorm2d(_FastBatchNorm, ref.BatchNorm2d):
    __doc__ = ref.BatchNorm2d.__doc__


LAYERS = ref.engine_layers(Linear, Conv2d, MaxPool2d, BatchNorm1d, BatchNorm2d)
