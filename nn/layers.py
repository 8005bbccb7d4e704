"""Layers: each a small object with `forward(x, training)` and `backward(dout)`.

Contract: `params` and `grads` are dicts with the same keys and shapes (`{}` without parameters),
`buffers` holds non-trainable state (BatchNorm running statistics). `forward` keeps in `self.cache`
what `backward` needs, only when `training` is true: backward after an inference forward raises.
`backward(dout, input_grad=True)` fills `self.grads` and returns dx; with `input_grad=False`
(the first layer of a model) a layer may skip computing dx and return None.

Layout: 4-D tensors are NHWC `(N, H, W, C)`, not PyTorch's NCHW. Measured on the 2-core target
machine NHWC is about 2x faster: channels are the contiguous axis, so im2col copies contiguous
runs, per-channel reductions (bias, BatchNorm) sum rows of a C-contiguous matrix, and the conv
output of a matmul is already NHWC. Flatten therefore flattens in (H, W, C) order.

Weights: Linear.W is (in_features, out_features) so that y = x @ W; Conv2d.W is
(kh, kw, in_channels, out_channels) ("HWIO") so that it reshapes without a copy into the
(kh*kw*C_in, C_out) matrix the im2col rows multiply. PyTorch's are W.T and W.transpose(3, 2, 0, 1).

dtype follows the parameters (float32 by default, `dtype=np.float64` for gradient checks).
Large convolutions, BatchNorm and pooling passes run on all cores (see `nn._conv`); the split
depends only on the shapes, so results are reproducible on one machine.
"""

import functools

import numpy as np

from nn import _conv
from nn.init import INITS, init_weight


class Layer:
    """Base class: no parameters, identity shape."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.cache = None
        self._spec: dict = {}

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of one example's output (no batch axis) for one example's input shape."""
        return tuple(input_shape)

    def spec(self) -> dict:
        """The plain dict that `Sequential.from_spec` turns back into this layer."""
        return {"type": type(self).__name__, **self._spec}

    def _need_cache(self):
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward with training=True first")
        return self.cache

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._spec.items())
        return f"{type(self).__name__}({args})"


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {value!r}")
        return _positive_int(name, value[0]), _positive_int(name, value[1])
    v = _positive_int(name, value)
    return v, v


def _check_init(init):
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


class Linear(Layer):
    """y = x @ W + b. x: (N, in_features) -> (N, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator, init: str = "he", dtype=np.float32):
        super().__init__()
        in_features = _positive_int("in_features", in_features)
        out_features = _positive_int("out_features", out_features)
        _check_init(init)
        self._spec = {"in_features": in_features, "out_features": out_features, "bias": bool(bias),
                      "init": init}
        self.params["W"] = init_weight(init, (in_features, out_features), in_features, out_features,
                                       rng, dtype)
        if bias:
            self.params["b"] = np.zeros(out_features, dtype)

    def forward(self, x, training):
        if x.ndim != 2 or x.shape[1] != self._spec["in_features"]:
            raise ValueError(f"Linear expects (N, {self._spec['in_features']}), got {x.shape}")
        w = self.params["W"]
        out = np.empty((x.shape[0], w.shape[1]), np.result_type(x, w))

        def rows(lo, hi):
            np.matmul(x[lo:hi], w, out=out[lo:hi])
            if "b" in self.params:
                out[lo:hi] += self.params["b"]

        _conv.parallel_rows(rows, x.shape[0], x.shape[0] * w.size // 64 if _conv.split_matmuls() else 0)
        self.cache = x if training else None
        return out

    def backward(self, dout, input_grad=True):
        x = self._need_cache()
        w = self.params["W"]
        dw = np.empty(w.shape, np.result_type(x, dout))
        # split over threads only inside a CNN's one-thread-BLAS pass, for big enough products
        size = x.shape[0] * w.size // 64 if _conv.split_matmuls() else 0

        def in_rows(lo, hi):  # rows of W: independent slices of x.T @ dout
            np.matmul(x[:, lo:hi].T, dout, out=dw[lo:hi])

        _conv.parallel_rows(in_rows, w.shape[0], size)
        self.grads["W"] = dw
        if "b" in self.params:
            self.grads["b"] = dout.sum(axis=0)
        if not input_grad:
            return None
        dx = np.empty(x.shape, dw.dtype)
        _conv.parallel_rows(lambda lo, hi: np.matmul(dout[lo:hi], w.T, out=dx[lo:hi]), x.shape[0], size)
        return dx

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self._spec["in_features"],):
            raise ValueError(f"Linear expects ({self._spec['in_features']},) per example, "
                             f"got {tuple(input_shape)}")
        return (self._spec["out_features"],)


class Conv2d(Layer):
    """2-D cross-correlation on NHWC input. x: (N, H, W, C_in) -> (N, H_out, W_out, C_out).

    W: (kh, kw, C_in, C_out), b: (C_out,). `padding` is an int, a pair, or "same" (stride 1 only,
    extra row/column at the bottom/right for even kernels, as PyTorch).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, *, rng: np.random.Generator, init: str = "he", dtype=np.float32):
        super().__init__()
        in_channels = _positive_int("in_channels", in_channels)
        out_channels = _positive_int("out_channels", out_channels)
        self.kh, self.kw = _pair("kernel_size", kernel_size)
        self.sh, self.sw = _pair("stride", stride)
        if padding == "same":
            if (self.sh, self.sw) != (1, 1):
                raise ValueError("padding='same' needs stride 1")
            top, left = (self.kh - 1) // 2, (self.kw - 1) // 2
            self.pads = (top, self.kh - 1 - top, left, self.kw - 1 - left)
        else:
            if isinstance(padding, (tuple, list)) and len(padding) == 2:
                ph, pw = padding
            else:
                ph = pw = padding
            for p in (ph, pw):
                if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0:
                    raise ValueError(f"padding must be 'same', an int >= 0 or a pair, got {padding!r}")
            self.pads = (int(ph), int(ph), int(pw), int(pw))
        _check_init(init)
        self._spec = {"in_channels": in_channels, "out_channels": out_channels,
                      "kernel_size": kernel_size if isinstance(kernel_size, int) else list(kernel_size),
                      "stride": stride if isinstance(stride, int) else list(stride),
                      "padding": padding if isinstance(padding, (int, str)) else list(padding),
                      "bias": bool(bias), "init": init}
        fan_in = in_channels * self.kh * self.kw
        fan_out = out_channels * self.kh * self.kw
        self.params["W"] = init_weight(init, (self.kh, self.kw, in_channels, out_channels),
                                       fan_in, fan_out, rng, dtype)
        if bias:
            self.params["b"] = np.zeros(out_channels, dtype)
        self._scratch = _conv.Scratch()

    def _out_hw(self, h, w):
        top, bottom, left, right = self.pads
        ho = (h + top + bottom - self.kh) // self.sh + 1
        wo = (w + left + right - self.kw) // self.sw + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"Conv2d input {h}x{w} is smaller than the kernel {self.kh}x{self.kw}")
        return ho, wo

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[2] != self._spec["in_channels"]:
            raise ValueError(f"Conv2d expects (H, W, {self._spec['in_channels']}) per example, "
                             f"got {tuple(input_shape)}")
        return (*self._out_hw(*input_shape[:2]), self._spec["out_channels"])

    def _pad(self, x):
        """x: (N, H, W, C) -> zero-padded (N, H + top + bottom, W + left + right, C) in a reused buffer."""
        n, h, w, c = x.shape
        if c != self._spec["in_channels"]:
            raise ValueError(f"Conv2d expects {self._spec['in_channels']} input channels, "
                             f"got shape {x.shape}")
        top, bottom, left, right = self.pads
        dtype = np.result_type(x, self.params["W"])
        if not (top or bottom or left or right):
            return np.ascontiguousarray(x, dtype=dtype)
        xp = self._scratch.get("xp", n, (h + top + bottom, w + left + right, c), dtype)
        xp[:, top:top + h, left:left + w] = x
        return xp

    @property
    def _flip_ok(self) -> bool:
        """Whether dx can be computed as a stride-1 correlation with the flipped kernels."""
        top, bottom, left, right = self.pads
        return (self.sh, self.sw) == (1, 1) and max(top, bottom) < self.kh and max(left, right) < self.kw

    def _w_flip(self):
        wt = self.params["W"]  # (kh, kw, C_in, C_out) -> (kh*kw*C_out, C_in), kernels rotated 180 degrees
        return np.ascontiguousarray(wt[::-1, ::-1].transpose(0, 1, 3, 2).reshape(-1, wt.shape[2]))

    def can_fuse_pool(self, input_shape: tuple) -> bool:
        """Whether `forward_pool` applies: stride 1 and an even output size."""
        ho, wo, _ = self.output_shape(input_shape)
        return self._flip_ok and ho % 2 == 0 and wo % 2 == 0

    def forward(self, x, training, pool_layout: bool = False):
        """`pool_layout=True` (set by Sequential only) emits (N, 4, H_out/2 * W_out/2, C_out):
        see `nn._conv`. H_out and W_out must then be even."""
        n, h, w, _ = x.shape
        ho, wo = self._out_hw(h, w)
        xp = self._pad(x)
        wt = self.params["W"]
        out = _conv.conv_matmul(xp, wt.reshape(-1, wt.shape[3]), self.kh, self.kw, self.sh, self.sw,
                                ho, wo, pool_layout, self._scratch, "col", self.params.get("b"))
        self.cache = ("conv", xp, x.shape, ho, wo, pool_layout) if training else None
        if pool_layout:
            return out.reshape(n, 4, (ho // 2) * (wo // 2), -1)
        return out.reshape(n, ho, wo, -1)

    def forward_pool(self, x, training, relu: bool):
        """This convolution, then ReLU if `relu`, then MaxPool2d(2), fused chunk by chunk (used by
        Sequential when `can_fuse_pool`). x: (N, H, W, C_in) -> (N, H_out/2, W_out/2, C_out)."""
        n, h, w, _ = x.shape
        ho, wo = self._out_hw(h, w)
        xp = self._pad(x)
        wt = self.params["W"]
        out, masks = _conv.conv_pool_forward(xp, wt.reshape(-1, wt.shape[3]), self.params.get("b"),
                                             self.kh, self.kw, ho, wo, relu, training, self._scratch)
        self.cache = ("pool", xp, x.shape, ho, wo, out, masks, relu) if training else None
        return out.reshape(n, ho // 2, wo // 2, -1)

    def backward(self, dout, input_grad=True):
        cache = self._need_cache()
        wt = self.params["W"]
        f = wt.shape[3]
        w_flip = self._w_flip() if input_grad and self._flip_ok else None
        if cache[0] == "pool":
            _, xp, x_shape, ho, wo, out, masks, relu = cache
            grads = _conv.conv_pool_backward(xp, np.ascontiguousarray(dout).reshape(out.shape), out, masks,
                                             wt.reshape(-1, f), w_flip, self.kh, self.kw, ho, wo,
                                             self.pads, relu, self._scratch)
        else:
            _, xp, x_shape, ho, wo, pool_layout = cache
            dout = np.ascontiguousarray(dout).reshape(x_shape[0], ho * wo, f)
            if self._flip_ok:  # stride 1: one chunked pass for dW, db and dx
                grads = _conv.conv_backward(xp, lambda n0, m, scr: dout[n0:n0 + m], wt.reshape(-1, f),
                                            w_flip, self.kh, self.kw, ho, wo, self.pads, pool_layout,
                                            self._scratch)
            else:
                grads = None
        if grads is not None:
            dw, db, dx = grads
            self.grads["W"] = dw.reshape(wt.shape)
            if "b" in self.params:
                self.grads["b"] = db
            return dx
        n, h, w, c = x_shape
        if "b" in self.params:
            self.grads["b"] = _channel_sum(dout.reshape(-1, f))
        self.grads["W"] = _conv.conv_weight_grad(
            xp, dout, self.kh, self.kw, self.sh, self.sw, ho, wo, pool_layout, self._scratch, "col"
        ).reshape(wt.shape)
        if not input_grad:
            return None
        top, bottom, left, right = self.pads
        kh, kw = self.kh, self.kw
        # General case (stride > 1, large padding): scatter-add the im2col gradient.
        if pool_layout:
            nat = np.empty((n, ho, wo, f), dout.dtype)
            np.copyto(_conv.unpool_layout(nat, ho, wo), dout.reshape(n, 2, 2, ho // 2, wo // 2, f))
            dout = nat
        dcol = (dout.reshape(-1, f) @ wt.reshape(-1, f).T).reshape(n, ho, wo, kh, kw, c)
        dxp = np.zeros((n, h + top + bottom, w + left + right, c), dcol.dtype)
        for a in range(kh):
            for b in range(kw):
                dxp[:, a:a + self.sh * (ho - 1) + 1:self.sh, b:b + self.sw * (wo - 1) + 1:self.sw] += \
                    dcol[:, :, :, a, b]
        return dxp[:, top:top + h, left:left + w].copy()


class MaxPool2d(Layer):
    """Max pooling over kernel_size windows, no padding, floor mode (as PyTorch's defaults).

    x: (N, H, W, C) -> (N, (H - k) // s + 1, (W - k) // s + 1, C). Backward sends each gradient
    to ONE position: the first maximum of its window in row-major order, as PyTorch does; with
    ties (MNIST's zero background) sending it to every maximum would be wrong.
    """

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kh, self.kw = _pair("kernel_size", kernel_size)
        self.sh, self.sw = (self.kh, self.kw) if stride is None else _pair("stride", stride)
        self._spec = {"kernel_size": kernel_size if isinstance(kernel_size, int) else list(kernel_size),
                      "stride": stride if stride is None or isinstance(stride, int) else list(stride)}

    def _out_hw(self, h, w):
        ho, wo = (h - self.kh) // self.sh + 1, (w - self.kw) // self.sw + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"MaxPool2d input {h}x{w} is smaller than the window {self.kh}x{self.kw}")
        return ho, wo

    @property
    def is_2x2(self) -> bool:
        return (self.kh, self.kw, self.sh, self.sw) == (2, 2, 2, 2)

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"MaxPool2d expects (H, W, C) per example, got {tuple(input_shape)}")
        h, w, c = input_shape
        return (*self._out_hw(h, w), c)

    def forward(self, x, training, pool_layout_hw: tuple[int, int] | None = None):
        """`pool_layout_hw=(H, W)` (set by Sequential only): x is a 2x2 pool-layout array
        (N, 4, H/2 * W/2, C) from a Conv2d, see `nn._conv`."""
        if pool_layout_hw is not None:
            h, w = pool_layout_hw
            n, _, p, c = x.shape
            out = np.empty((n, p, c), x.dtype)
            tmp = np.empty_like(out)
            masks = np.empty((3, n, p, c), np.bool_) if training else None
            _conv.parallel_rows(lambda lo, hi: _conv.max4(x[lo:hi], out[lo:hi], None if masks is None
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

    def backward(self, dout, input_grad=True):
        cache = self._need_cache()
        if cache[0] == "blocks":
            _, masks, x_shape = cache
            n, _, p, c = x_shape
            dx = np.empty(x_shape, dout.dtype)
            g = np.ascontiguousarray(dout).reshape(n, p, c)
            _conv.parallel_rows(lambda lo, hi: _conv.route4(g[lo:hi], masks[:, lo:hi], dx[lo:hi]), n, dx.size)
            return dx
        _, idx, x_shape, window = cache
        dx = np.zeros(x_shape, dout.dtype)
        for a in range(self.kh):
            for b in range(self.kw):
                window(a, b, dx)[...] += dout * (idx == a * self.kw + b)
        return dx


class ReLU(Layer):
    """max(x, 0), any shape; the gradient at 0 is 0."""

    def forward(self, x, training):
        out = np.maximum(x, 0)
        self.cache = out if training else None
        return out

    def backward(self, dout, input_grad=True):
        out = self._need_cache()
        return np.multiply(dout, out > 0, dtype=dout.dtype)


class Dropout(Layer):
    """Inverted dropout: in training zero each element with probability p and scale the rest by
    1 / (1 - p), so inference is the identity. Masks come from the Generator passed in."""

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = rng
        self._spec = {"p": self.p}

    def forward(self, x, training):
        if not training or self.p == 0:
            self.cache = None if not training else 1
            return x
        if self.p == 1:
            mask = np.zeros(x.shape, x.dtype)
        else:
            uniform = self.rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
            keep = uniform >= self.p
            mask = np.multiply(keep, 1 / (1 - self.p), dtype=x.dtype)
        self.cache = mask
        return x * mask

    def backward(self, dout, input_grad=True):
        mask = self._need_cache()
        return dout * mask if isinstance(mask, np.ndarray) else dout


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), in memory order: (H, W, C) for NHWC images."""

    def forward(self, x, training):
        self.cache = x.shape if training else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dout, input_grad=True):
        return dout.reshape(self._need_cache())

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)


class _BatchNorm(Layer):
    """Batch normalisation over every axis but the last (channels); running statistics as PyTorch:
    running = (1 - momentum) * running + momentum * batch, the variance unbiased (n / (n - 1))."""

    ndim = None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *, dtype=np.float32):
        super().__init__()
        num_features = _positive_int("num_features", num_features)
        if not isinstance(eps, (int, float)) or eps <= 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        self._spec = {"num_features": num_features, "eps": self.eps, "momentum": self.momentum}
        self.params["gamma"] = np.ones(num_features, dtype)
        self.params["beta"] = np.zeros(num_features, dtype)
        self.buffers["running_mean"] = np.zeros(num_features, dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype)

    def output_shape(self, input_shape):
        c = self._spec["num_features"]
        if len(input_shape) != self.ndim - 1 or input_shape[-1] != c:
            raise ValueError(f"{type(self).__name__}({c}) got per-example shape {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x, training):
        c = self._spec["num_features"]
        if x.ndim != self.ndim or x.shape[-1] != c:
            raise ValueError(f"{type(self).__name__}({c}) expects {self.ndim}-D input with {c} "
                             f"channels last, got {x.shape}")
        gamma, beta = self.params["gamma"], self.params["beta"]
        x2 = x.reshape(-1, c)  # (M, C): channels are the contiguous axis
        m = x2.shape[0]
        out = np.empty(x2.shape, np.result_type(x2, gamma))
        # Every pass below is split over row ranges run on all cores (memory-bound work).
        rows = functools.partial(_conv.parallel_rows, m=m, size=x2.size)
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
        if m < 2:
            raise ValueError(f"{type(self).__name__} in training needs more than 1 value per channel")
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
        mom = self.momentum
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        rm *= 1 - mom
        rm += mom * mean.astype(rm.dtype)
        rv *= 1 - mom
        rv += (mom * m / (m - 1)) * var.astype(rv.dtype)
        self.cache = (x2, mean, inv_std, x.shape)  # x2 is the previous layer's output: no copy
        return out.reshape(x.shape)

    def backward(self, dout, input_grad=True):
        x2, mean, inv_std, shape = self._need_cache()
        m, c = x2.shape
        d2 = dout.reshape(m, c)
        rows = functools.partial(_conv.parallel_rows, m=m, size=x2.size)
        dx = np.empty(d2.shape, np.result_type(d2, x2))

        def sums(lo, hi):  # dx holds x - mean for now
            np.subtract(x2[lo:hi], mean, out=dx[lo:hi])
            return _channel_sum(d2[lo:hi]), np.einsum("ij,ij->j", d2[lo:hi], dx[lo:hi])

        parts = rows(sums)
        dbeta = sum(p[0] for p in parts)
        dgamma = sum(p[1] for p in parts) * inv_std
        self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
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


def _channel_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the rows of (M, C) as one BLAS product: 4x faster than a.sum(axis=0), whose
    sequential float32 accumulation is also less accurate."""
    return np.ones(a.shape[0], a.dtype) @ a


class BatchNorm1d(_BatchNorm):
    """x: (N, C) -> (N, C)."""

    ndim = 2


class BatchNorm2d(_BatchNorm):
    """x: (N, H, W, C) -> (N, H, W, C), statistics per channel over N, H and W."""

    ndim = 4


LAYERS = {cls.__name__: cls for cls in (Linear, Conv2d, MaxPool2d, ReLU, Dropout, Flatten,
                                        BatchNorm1d, BatchNorm2d)}
