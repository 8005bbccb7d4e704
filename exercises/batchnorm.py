"""Exercise: BatchNorm2d (docs/05-dropout-batchnorm.md). Check it with
`python -m exercises check batchnorm`.

The constructor is the library's: self.params["gamma"], ["beta"] are (C,), self.eps, and the
running statistics in self.buffers, which `self._update_running(mean, var, m)` updates from a
training batch of m values per channel. Statistics are per channel, over N, H and W.
"""

import numpy as np

import nn.layers


class BatchNorm2d(nn.layers.BatchNorm2d):
    def forward(self, x, training):
        """x: (N, H, W, C) -> the same shape. Training: normalise with the batch's mean and biased
        variance, update the running statistics, keep what backward needs; inference: normalise
        with the running statistics. Then y = gamma * x̂ + beta."""
        raise NotImplementedError

    def backward(self, dout):
        """dout: (N, H, W, C) -> dx; fill self.grads["gamma"] and self.grads["beta"] (C,)."""
        raise NotImplementedError
