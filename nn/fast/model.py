"""FastSequential: the reference Sequential's layers, run as the engine plans them."""

import contextlib

import numpy as np

from nn.fast import threads
from nn.fast.optim import flat_order
from nn.fast.layers import LAYERS, BatchNorm2d, Conv2d, MaxPool2d
from nn.layers import ReLU
from nn.model import Sequential, engine_backward


class FastSequential(Sequential):
    """A Sequential of the engine's layers (`nn.fast.layers`), with passes planned for speed.

    When a Conv2d feeds a 2x2 stride-2 MaxPool2d through only BatchNorm2d / ReLU layers, the
    convolution emits its output in pool layout (see `nn.fast.kernels`) so the pool is three
    `np.maximum` calls, and ReLUs just before the pool run after it (max and ReLU commute, ties
    included, so on a quarter of the data); Conv2d [ReLU] MaxPool2d(2) runs fused, a few images
    at a time (`Conv2d.forward_pool`). Outputs equal the unplanned layers' (up to BatchNorm's
    summation order), and `pool_layout = False` turns all this off. A model with threaded
    convolutions holds BLAS at one thread for the whole pass. In training the backward pass stops
    at the first layer with parameters and skips its dx (a third of an MLP's backward).

    The parameters live in one flat buffer and the layers write their gradients into another
    (views, in `nn.fast.optim.flat_order`), so that `nn.fast.optim.FastAdam` updates them all
    in a few passes, in place.
    """

    LAYERS = LAYERS

    def __init__(self, layers):
        super().__init__(layers)
        self.pool_layout = True
        self._trace: list[int] = []
        self._pool_pairs = {}  # conv index -> pool index
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Conv2d):
                j = i + 1
                while j < len(self.layers) and isinstance(self.layers[j], (BatchNorm2d, ReLU)):
                    j += 1
                if j < len(self.layers) and isinstance(self.layers[j], MaxPool2d) and self.layers[j].is_2x2:
                    self._pool_pairs[i] = j
        self._flatten()

    def _flatten(self):
        """Move the parameters into one flat buffer and give each layer views into a flat
        gradient buffer (`grad_buffers`), both in `flat_order`. Mixed dtypes stay as they are."""
        params = self.params
        if not params or len({p.dtype for p in params.values()}) > 1:
            return
        owner = {f"{i}.{k}": (layer, k) for i, layer in enumerate(self.layers) for k in layer.params}
        dtype = next(iter(params.values())).dtype
        flat_p = np.empty(sum(p.size for p in params.values()), dtype)
        flat_g = np.zeros_like(flat_p)
        offset = 0
        for name in flat_order(params):
            layer, k = owner[name]
            p = params[name]
            view = flat_p[offset:offset + p.size].reshape(p.shape)
            view[...] = p
            layer.params[k] = view
            if "grad_buffers" not in vars(layer):
                layer.grad_buffers = {}
            layer.grad_buffers[k] = flat_g[offset:offset + p.size].reshape(p.shape)
            offset += p.size

    def to(self, device):
        """The engine is NumPy code with CPU threads: it stays on the CPU."""
        if device.name != "cpu":
            raise ValueError(f"the fast engine runs on the CPU only, not on device {device.name}; "
                             f"use the reference engine there")
        return super().to(device)

    def _blas_mode(self):
        """One-threaded BLAS for the whole pass if a convolution runs on our own threads."""
        threaded = threads.uses_threads() and any(isinstance(layer, Conv2d) for layer in self.layers)
        return threads.single_threaded_blas() if threaded else contextlib.nullcontext()

    def forward(self, x, training):
        with self._blas_mode():
            try:
                return self._forward(x, training)
            except ValueError as e:
                i = self._trace[-1] + 1 if self._trace else 0
                raise ValueError(f"layer {i} ({type(self.layers[i]).__name__}): {e}") from None

    def backward(self, dout, input_grad=True):
        with self._blas_mode():
            return self._backward(dout, input_grad)

    def _forward(self, x, training):
        self._trace = []  # layer indices in the order they ran; backward replays it reversed
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            if (self.pool_layout and i in self._pool_pairs and x.ndim == 4
                    and layer.can_pool(x.shape[1:])):
                j = self._pool_pairs[i]
                between = list(range(i + 1, j))
                n_relu = 0  # trailing ReLUs commute with max pooling: run them on 1/4 of the data
                while n_relu < len(between) and isinstance(self.layers[between[-1 - n_relu]], ReLU):
                    n_relu += 1
                others, relus = between[:len(between) - n_relu], between[len(between) - n_relu:]
                if not others and n_relu <= 1:  # Conv2d [ReLU] MaxPool2d(2) as one chunked pass
                    x = layer.forward_pool(x, training, relu=bool(relus))
                    self._trace.append(i)
                    i = j + 1
                    continue
                ho, wo = layer.output_shape(x.shape[1:])[:2]
                x = layer.forward(x, training, pool_layout=True)
                for k in others:
                    x = self.layers[k].forward(x, training)
                x = self.layers[j].forward(x, training, pool_layout_hw=(ho, wo))
                for k in relus:
                    x = self.layers[k].forward(x, training)
                self._trace += [i, *others, j, *relus]
                i = j + 1
                continue
            x = layer.forward(x, training)
            self._trace.append(i)
            i += 1
        return x

    def _backward(self, dout, input_grad):
        # Layers before the first one with parameters need no backward unless dx is wanted.
        return engine_backward(self.layers, self._trace, dout, input_grad)
