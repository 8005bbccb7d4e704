"""Reference layers: each `forward` and `backward` is the textbook math, in plain vectorised code.

A layer is a small object with one job. `forward(x, training)` returns the output and keeps in
`self.cache` what `backward` needs (only when `training` is true: backward after an inference
forward raises); `backward(dout)` fills `self.grads` and returns dx = dL/dx. `params` and
`grads` are dicts with the same keys and shapes (`{}` without parameters); `buffers` holds
non-trainable state (BatchNorm's running statistics).

Everything here is written against `xp`, the array module of the input (NumPy, or CuPy on a
GPU), with operations both have. No threads, no scratch buffers, no layout tricks: those live
in the CPU engine, `nn.fast`, which `tests/test_fast.py` holds to these layers.

Layout: images are NHWC `(N, H, W, C)`, not PyTorch's NCHW: with channels the contiguous axis,
an im2col row is a contiguous run and the matmul's output is already NHWC (about 2x faster on
the CPU). Flatten therefore flattens in (H, W, C) order. Linear.W is (in_features, out_features)
so that y = x @ W; Conv2d.W is (kh, kw, C_in, C_out) so that it reshapes into the
(kh*kw*C_in, C_out) matrix an im2col row multiplies. PyTorch's are W.T and
W.transpose(3, 2, 0, 1). dtype follows the parameters (float32; float64 for gradient checks).
"""

import numpy as np

from nn.backend import array_module
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

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of one example's output (no batch axis) for one example's input shape."""
        return tuple(input_shape)

    @property
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

    def _check_input(self, x):
        if x.ndim != 2 or x.shape[1] != self._spec["in_features"]:
            raise ValueError(f"Linear expects (N, {self._spec['in_features']}), got {x.shape}")

    def forward(self, x, training):
        self._check_input(x)
        out = x @ self.params["W"]                          # (N, in) @ (in, out) -> (N, out)
        if "b" in self.params:
            out += self.params["b"]
        self.cache = x if training else None
        return out

    def backward(self, dout):
        """dout: (N, out) -> dx: (N, in); dW = xᵀ · dout, db = Σₙ dout."""
        x = self._need_cache()
        self.grads["W"] = x.T @ dout                         # (in, N) @ (N, out) -> (in, out)
        if "b" in self.params:
            self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T                     # (N, out) @ (out, in) -> (N, in)

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self._spec["in_features"],):
            raise ValueError(f"Linear expects ({self._spec['in_features']},) per example, "
                             f"got {tuple(input_shape)}")
        return (self._spec["out_features"],)


def im2col(x_pad, kh: int, kw: int, sh: int, sw: int):
    """Every kh x kw window of a padded input, as rows.

    x_pad: (N, Hp, Wp, C) -> (N, H_out, W_out, kh, kw, C), a read-only view where possible:
    window (i, j) starts at row i*sh, column j*sw. One matmul of its (N*H_out*W_out, kh*kw*C)
    reshape with the (kh*kw*C, C_out) kernel matrix is the whole convolution.
    """
    xp = array_module(x_pad)
    win = xp.lib.stride_tricks.sliding_window_view(x_pad, (kh, kw), axis=(1, 2))  # (N, Hp-kh+1, Wp-kw+1, C, kh, kw)
    return win[:, ::sh, ::sw].transpose(0, 1, 2, 4, 5, 3)


def col2im(dcols, x_shape: tuple, pads: tuple, sh: int, sw: int):
    """The adjoint of `im2col` (then un-padding): add each window's gradient back where it came from.

    dcols: (N, H_out, W_out, kh, kw, C) -> dx: x_shape = (N, H, W, C). An input pixel in several
    windows receives the sum of their gradients: one strided scatter-add per kernel offset (a, b).
    """
    xp = array_module(dcols)
    n, h, w, c = x_shape
    top, bottom, left, right = pads
    _, ho, wo, kh, kw, _ = dcols.shape
    dx_pad = xp.zeros((n, h + top + bottom, w + left + right, c), dcols.dtype)
    for a in range(kh):
        for b in range(kw):
            dx_pad[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += dcols[:, :, :, a, b]
    return dx_pad[:, top:top + h, left:left + w]


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
            self.pads = (int(ph), int(ph), int(pw), int(pw))  # (top, bottom, left, right)
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

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[3] != self._spec["in_channels"]:
            raise ValueError(f"Conv2d expects {self._spec['in_channels']} input channels, "
                             f"got shape {x.shape}")
        self._out_hw(*x.shape[1:3])

    def forward(self, x, training):
        self._check_input(x)
        xp = array_module(x)
        top, bottom, left, right = self.pads
        x_pad = xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))   # (N, Hp, Wp, C_in)
        windows = im2col(x_pad, self.kh, self.kw, self.sh, self.sw)        # (N, Ho, Wo, kh, kw, C_in)
        n, ho, wo = windows.shape[:3]
        cols = windows.reshape(n * ho * wo, -1)                             # (N*Ho*Wo, kh*kw*C_in)
        w2d = self.params["W"].reshape(cols.shape[1], -1)                   # (kh*kw*C_in, C_out)
        out = cols @ w2d                                                    # (N*Ho*Wo, C_out)
        if "b" in self.params:
            out += self.params["b"]
        self.cache = (x.shape, cols) if training else None
        return out.reshape(n, ho, wo, -1)

    def backward(self, dout):
        """dout: (N, Ho, Wo, C_out) -> dx: (N, H, W, C_in).

        Forward was out = cols · W2d + b, so dW2d = colsᵀ · dout, db = Σ dout over every output
        pixel, and dcols = dout · W2dᵀ, which col2im adds back onto the input pixels.
        """
        x_shape, cols = self._need_cache()
        w = self.params["W"]
        n, ho, wo, c_out = dout.shape
        dout2 = dout.reshape(-1, c_out)                                     # (N*Ho*Wo, C_out)
        self.grads["W"] = (cols.T @ dout2).reshape(w.shape)                 # (kh*kw*C_in, C_out)
        if "b" in self.params:
            self.grads["b"] = dout2.sum(axis=0)
        dcols = dout2 @ w.reshape(-1, c_out).T                              # (N*Ho*Wo, kh*kw*C_in)
        dcols = dcols.reshape(n, ho, wo, self.kh, self.kw, x_shape[3])
        return col2im(dcols, x_shape, self.pads, self.sh, self.sw)


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

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"MaxPool2d expects (H, W, C) per example, got {tuple(input_shape)}")
        h, w, c = input_shape
        return (*self._out_hw(h, w), c)

    def forward(self, x, training):
        n, h, w, c = x.shape
        ho, wo = self._out_hw(h, w)
        windows = im2col(x, self.kh, self.kw, self.sh, self.sw)             # (N, Ho, Wo, kh, kw, C)
        windows = windows.reshape(n, ho, wo, self.kh * self.kw, c)          # (N, Ho, Wo, kh*kw, C)
        # argmax returns the FIRST maximum of each window; the gradient goes there only.
        self.cache = (x.shape, windows.argmax(axis=3)) if training else None  # (N, Ho, Wo, C)
        return windows.max(axis=3)

    def backward(self, dout):
        """dout: (N, Ho, Wo, C) -> dx: (N, H, W, C), each gradient at its window's first maximum."""
        x_shape, first = self._need_cache()
        xp = array_module(dout)
        n, ho, wo, c = dout.shape
        offsets = xp.arange(self.kh * self.kw).reshape(-1, 1)               # (kh*kw, 1)
        mask = first[:, :, :, None, :] == offsets                           # (N, Ho, Wo, kh*kw, C)
        dcols = (dout[:, :, :, None, :] * mask).reshape(n, ho, wo, self.kh, self.kw, c)
        return col2im(dcols, x_shape, (0, 0, 0, 0), self.sh, self.sw)


class ReLU(Layer):
    """max(x, 0), any shape; the gradient at 0 is 0."""

    def forward(self, x, training):
        out = array_module(x).maximum(x, 0)
        self.cache = out if training else None
        return out

    def backward(self, dout):
        out = self._need_cache()
        return dout * (out > 0)


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
        if not training:
            self.cache = None
            return x
        xp = array_module(x)
        if self.p == 0 or self.p == 1:  # nothing random to draw: the Generator's stream is untouched
            mask = xp.full(x.shape, 1 - self.p, x.dtype)
        else:
            # Drawn on the host from the passed-in Generator: the same seed gives the same masks
            # whatever array module x lives in.
            uniform = self.rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
            keep = xp.asarray(uniform) >= self.p                             # P(keep) = 1 - p
            mask = keep * x.dtype.type(1 / (1 - self.p))                     # E[mask] = 1
        self.cache = mask
        return x * mask

    def backward(self, dout):
        return dout * self._need_cache()


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), in memory order: (H, W, C) for NHWC images."""

    def forward(self, x, training):
        self.cache = x.shape if training else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._need_cache())

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)


class _BatchNorm(Layer):
    """Batch normalisation over every axis but the last (channels).

    Training: y = γ · x̂ + β with x̂ = (x - μ) / √(σ² + ε), μ and σ² the batch's per-channel mean
    and (biased) variance. Running statistics as PyTorch: running = (1 - momentum) * running +
    momentum * batch, the variance unbiased (m / (m - 1)); inference normalizes with them.
    """

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

    def _check_input(self, x, training):
        c = self._spec["num_features"]
        if x.ndim != self.ndim or x.shape[-1] != c:
            raise ValueError(f"{type(self).__name__}({c}) expects {self.ndim}-D input with {c} "
                             f"channels last, got {x.shape}")
        if training and x.size // c < 2:
            raise ValueError(f"{type(self).__name__} in training needs more than 1 value per channel")

    def _update_running(self, mean, var, m: int) -> None:
        """running = (1 - momentum) * running + momentum * batch, in place (the arrays are live)."""
        mom = self.momentum
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        rm *= 1 - mom
        rm += mom * mean.astype(rm.dtype)
        rv *= 1 - mom
        rv += (mom * m / (m - 1)) * var.astype(rv.dtype)

    def forward(self, x, training):
        self._check_input(x, training)
        xp = array_module(x)
        gamma, beta = self.params["gamma"], self.params["beta"]
        x2 = x.reshape(-1, x.shape[-1])                                      # (M, C)
        if not training:
            x_hat = (x2 - self.buffers["running_mean"]) / xp.sqrt(self.buffers["running_var"] + self.eps)
            self.cache = None
            return (gamma * x_hat + beta).reshape(x.shape)
        mean = x2.mean(axis=0)                                               # (C,)
        var = ((x2 - mean) ** 2).mean(axis=0)                                # (C,), biased
        inv_std = 1 / xp.sqrt(var + self.eps)
        x_hat = (x2 - mean) * inv_std                                        # (M, C)
        self._update_running(mean, var, x2.shape[0])
        self.cache = (x_hat, inv_std)
        return (gamma * x_hat + beta).reshape(x.shape)

    def backward(self, dout):
        """dout: same shape as x -> dx. With g = dL/dx̂ = γ · dout, per channel over the M rows:

        dx = (1/σ) · (g - mean(g) - x̂ · mean(g · x̂)): the direct path, minus what flows through
        μ, minus what flows through σ².
        """
        x_hat, inv_std = self._need_cache()
        d2 = dout.reshape(x_hat.shape)                                       # (M, C)
        self.grads["beta"] = d2.sum(axis=0)
        self.grads["gamma"] = (d2 * x_hat).sum(axis=0)
        g = d2 * self.params["gamma"]                                        # dL/dx̂
        dx = inv_std * (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0))
        return dx.reshape(dout.shape)


class BatchNorm1d(_BatchNorm):
    """x: (N, C) -> (N, C)."""

    ndim = 2


class BatchNorm2d(_BatchNorm):
    """x: (N, H, W, C) -> (N, H, W, C), statistics per channel over N, H and W."""

    ndim = 4


class OuterSum(Layer):
    """Scores of every pair (a, b) from scores of each half: (N, 2k) -> (N, k*k).

    out[:, a*k + b] = x[:, a] + x[:, k + b]. Before a softmax this makes the k*k classes two
    independent k-way choices: softmax(out)[a*k + b] = softmax(x[:, :k])[a] · softmax(x[:, k:])[b]
    (the normaliser of a sum of exponents factors), so a two-digit label is learnt as two digits.
    Backward: each half's score is in k outputs, so dx[:, a] = Σ_b dout[:, a*k + b] and
    dx[:, k + b] = Σ_a dout[:, a*k + b].
    """

    def _halves(self, width):
        if width % 2:
            raise ValueError(f"OuterSum needs an even number of scores, got {width}")
        return width // 2

    def forward(self, x, training):
        if x.ndim != 2:
            raise ValueError(f"OuterSum expects (N, 2k), got shape {x.shape}")
        k = self._halves(x.shape[1])
        out = x[:, :k, None] + x[:, None, k:]                                # (N, k, k)
        self.cache = k if training else None
        return out.reshape(len(x), k * k)

    def backward(self, dout):
        k = self._need_cache()
        d = dout.reshape(len(dout), k, k)
        return array_module(dout).concatenate([d.sum(axis=2), d.sum(axis=1)], axis=1)

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"OuterSum expects (2k,) per example, got {tuple(input_shape)}")
        k = self._halves(input_shape[0])
        return (k * k,)


class Tiles(Layer):
    """Cut each image into `parts` side-by-side tiles, each its own example:
    (N, H, parts*W, C) -> (parts*N, H, W, C), image n's tile j at row n*parts + j.

    The layers after it see single tiles, so their weights are shared across the tiles: an
    MNIST-100 pair (28x56) becomes two 28x28 digits that one digit network reads, and each pair
    teaches that network twice. `Untile` puts each image's tiles back together. Backward is the
    inverse rearrangement: no arithmetic, every value just moves back to where it came from.
    """

    def __init__(self, parts: int = 2):
        super().__init__()
        self.parts = _positive_int("parts", parts)
        self._spec = {"parts": self.parts}

    def _tile_width(self, width: int) -> int:
        if width % self.parts:
            raise ValueError(f"Tiles({self.parts}) needs a width divisible by {self.parts}, got {width}")
        return width // self.parts

    def forward(self, x, training):
        if x.ndim != 4:
            raise ValueError(f"Tiles expects (N, H, W, C) images, got shape {x.shape}")
        n, h, w, c = x.shape
        tw = self._tile_width(w)
        self.cache = x.shape if training else None
        tiles = x.reshape(n, h, self.parts, tw, c).transpose(0, 2, 1, 3, 4)   # (N, parts, H, W, C)
        return tiles.reshape(n * self.parts, h, tw, c)

    def backward(self, dout):
        n, h, w, c = self._need_cache()
        d = dout.reshape(n, self.parts, h, w // self.parts, c).transpose(0, 2, 1, 3, 4)
        return d.reshape(n, h, w, c)

    def output_shape(self, input_shape):
        """One tile's shape (the batch axis holds `parts` times as many examples)."""
        if len(input_shape) != 3:
            raise ValueError(f"Tiles expects (H, W, C) per example, got {tuple(input_shape)}")
        h, w, c = input_shape
        return (h, self._tile_width(w), c)


class Untile(Layer):
    """The inverse grouping of `Tiles`: (parts*N, F) -> (N, parts*F), each image's tiles'
    features side by side, tile 0 first. Before `OuterSum`, with F = 10 scores per digit, this
    gives the (N, 20) that it turns into 100 pair scores."""

    def __init__(self, parts: int = 2):
        super().__init__()
        self.parts = _positive_int("parts", parts)
        self._spec = {"parts": self.parts}

    def forward(self, x, training):
        if x.ndim != 2 or len(x) % self.parts:
            raise ValueError(f"Untile({self.parts}) expects (N, F) with N divisible by {self.parts}, "
                             f"got shape {x.shape}")
        self.cache = x.shape if training else None
        return x.reshape(len(x) // self.parts, self.parts * x.shape[1])

    def backward(self, dout):
        return dout.reshape(self._need_cache())

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"Untile expects (F,) per tile, got {tuple(input_shape)}")
        return (self.parts * input_shape[0],)


# The layer types a spec names (nn.model.Sequential.from_spec); an engine replaces some of them.
LAYERS = {cls.__name__: cls for cls in (Linear, Conv2d, MaxPool2d, ReLU, Dropout, Flatten,
                                        BatchNorm1d, BatchNorm2d, OuterSum, Tiles, Untile)}


def engine_layers(*classes: type[Layer]) -> dict[str, type[Layer]]:
    """LAYERS with an engine's classes in place of the reference ones they subclass (same
    name, constructor, parameters and spec); the layers an engine does not replace stay."""
    for cls in classes:
        if not issubclass(cls, LAYERS.get(cls.__name__, type(None))):
            raise TypeError(f"{cls.__module__}.{cls.__qualname__} does not subclass a reference "
                            f"layer of its name")
    return {**LAYERS, **{cls.__name__: cls for cls in classes}}
