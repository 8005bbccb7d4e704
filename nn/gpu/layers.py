"""The GPU engine's layers: the reference layers' math, each step one kernel on a CUDA device.

Each class subclasses its reference layer in `nn.layers` (same constructor, parameters, spec
and name) and overrides only `forward`/`backward`, for inputs that are CuPy arrays:
  * Conv2d: im2col is one gather kernel writing the (N*Ho*Wo, kh*kw*C) matrix with the zero
    padding in place (no padded copy, no 6-D strided view); dx is col2im as one gather kernel
    (each input pixel sums its windows: no scatter-add, no atomics); the products are cuBLAS's;
  * MaxPool2d: one kernel for the maxima and their first-maximum offsets (int32, not a mask
    the size of the input), one for the gradient's way back;
  * ReLU's backward is one kernel instead of a compare and a multiply;
  * Linear and Conv2d's `backward(dout, input_grad=False)` skip dx (the model's first layer).
BatchNorm, Dropout, Flatten are the reference classes: their steps are already whole-array
calls. `tests/test_gpu.py` holds every layer here to the reference on the CPU.
"""

from nn import layers as ref
from nn.gpu import kernels
from nn.layers import BatchNorm1d, BatchNorm2d, Dropout, Flatten


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
        self.grads["W"] = (cols.T @ dout2).reshape(w.shape)
        if "b" in self.params:
            self.grads["b"] = dout2.sum(axis=0)
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


LAYERS = {cls.__name__: cls for cls in (Linear, Conv2d, MaxPool2d, ReLU, Dropout, Flatten,
                                        BatchNorm1d, BatchNorm2d)}
