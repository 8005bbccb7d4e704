"""The GPU engine's layers: the reference layers' math, each step one kernel on a CUDA device.

Each class subclasses its reference layer in `nn.layers` (same constructor, parameters, spec
and name) and overrides only `forward`/`backward`, for inputs that are CuPy arrays:
  * Conv2d: im2col is one gather kernel writing the (N*Ho*Wo, kh*kw*C) matrix with the zero
    padding in place (no padded copy, no 6-D strided view); dx is col2im as one gather kernel
    (each input pixel sums its windows: no scatter-add, no atomics); the products are cuBLAS's.
    dW = colsᵀ·dout and db = Σ dout are sums over N*Ho*Wo rows (800,000 for the first layer at
    batch 512) into a few hundred numbers: as one product that is a long thin reduction the GPU
    runs on a handful of its cores, so the rows are cut into blocks, each block's product runs
    in one batched cuBLAS call, and the blocks' sums are added (`tall_grads`; the timings:
    docs/gpu.md);
  * MaxPool2d: one kernel for the maxima and their first-maximum offsets (int32, not a mask
    the size of the input), one for the gradient's way back;
  * ReLU's backward is one kernel instead of a compare and a multiply;
  * Linear and Conv2d's `backward(dout, input_grad=False)` skip dx (the model's first layer).
BatchNorm, Dropout, Flatten, OuterSum, Tiles and Untile are the reference classes: their steps
are already whole-array calls. `tests/test_gpu.py` holds every layer here to the reference on the CPU.
"""

from nn import layers as ref
from nn.backend import array_module
from nn.gpu import kernels

BLOCK_ROWS = 2048  # rows of one block of `tall_grads`: 128 blocks for the first layer at batch 128


def row_blocks(n: int, rows_per_image: int, target: int = BLOCK_ROWS) -> int:
    """Images per block: the largest divisor of the batch n whose block has at most `target`
    rows (at least one image), so the blocks tile the rows exactly."""
    best = 1
    for g in range(1, n + 1):
        if n % g == 0 and g * rows_per_image <= target:
            best = g
    return best


def tall_grads(cols, dout2, n: int, bias: bool):
    """dW = colsᵀ·dout2 (K, C) and db = Σ rows of dout2 (C,) or None, for cols (R, K) and
    dout2 (R, C) with R = n images' rows: per block of rows one batched product, then the sum
    of the blocks' partial results."""
    xp = array_module(cols)
    r, k = cols.shape
    c = dout2.shape[1]
    s = n // row_blocks(n, r // n)                                          # blocks
    a, d = cols.reshape(s, r // s, k), dout2.reshape(s, r // s, c)
    dw = xp.matmul(a.transpose(0, 2, 1), d).sum(axis=0)                    # (s, K, C) -> (K, C)
    db = xp.matmul(xp.ones((s, 1, r // s), d.dtype), d).sum(axis=(0, 1)) if bias else None
    return dw, db


class Linear(ref.Linear):
    __doc__ = ref.Linear.__doc__

    def backward(self, dout, input_grad=True):
        x = self._need_cache()
        self.grads["W"] = x.T @ dout
        if "b" in self.params:
            self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T if input_grad else None


class Conv2d(ref.Conv2d):
    __doc__ = ref.Conv2d.__doc__

    def forward(self, x, training):
        self._check_input(x)
        n, h, w = x.shape[:3]
        ho, wo = self._out_hw(h, w)
        x = x if x.flags.c_contiguous else x.copy()
        cols = kernels.im2col(x, self.kh, self.kw, self.sh, self.sw, self.pads, ho, wo)
        out = cols @ self.params["W"].reshape(cols.shape[1], -1)            # (N*Ho*Wo, C_out)
        if "b" in self.params:
            out += self.params["b"]
        self.cache = (x.shape, cols) if training else None
        return out.reshape(n, ho, wo, -1)

    def backward(self, dout, input_grad=True):
        x_shape, cols = self._need_cache()
        w = self.params["W"]
        n, ho, wo, c_out = dout.shape
        dout2 = dout.reshape(-1, c_out)
        dw, db = tall_grads(cols, dout2, n, "b" in self.params)
        self.grads["W"] = dw.reshape(w.shape)
        if db is not None:
            self.grads["b"] = db
        if not input_grad:
            return None
        dcols = dout2 @ w.reshape(-1, c_out).T                              # (N*Ho*Wo, kh*kw*C_in)
        return kernels.col2im(dcols, x_shape, self.kh, self.kw, self.sh, self.sw, self.pads, ho, wo)


class MaxPool2d(ref.MaxPool2d):
    __doc__ = ref.MaxPool2d.__doc__

    def forward(self, x, training):
        if x.ndim != 4:
            raise ValueError(f"MaxPool2d expects (N, H, W, C), got shape {x.shape}")
        ho, wo = self._out_hw(*x.shape[1:3])
        x = x if x.flags.c_contiguous else x.copy()
        out, first = kernels.pool_forward(x, self.kh, self.kw, self.sh, self.sw, ho, wo)
        self.cache = (x.shape, first) if training else None
        return out

    def backward(self, dout):
        x_shape, first = self._need_cache()
        dout = dout if dout.flags.c_contiguous else dout.copy()
        return kernels.pool_backward(dout, first, x_shape, self.kh, self.kw, self.sh, self.sw)


class ReLU(ref.ReLU):
    __doc__ = ref.ReLU.__doc__

    def backward(self, dout):
        return kernels.kernels()["relu_backward"](dout, self._need_cache())


LAYERS = ref.engine_layers(Linear, Conv2d, MaxPool2d, ReLU)
