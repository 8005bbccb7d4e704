"""Exercise: MaxPool2d (docs/04-maxpool.md). Check it with `python -m exercises check maxpool`.

The constructor is the library's: the window is (self.kh, self.kw), the stride (self.sh, self.sw),
no padding. Images are NHWC.
"""

import numpy as np

import nn.layers


class MaxPool2d(nn.layers.MaxPool2d):
    def forward(self, x, training):
        """x: (N, H, W, C) -> (N, (H - kh) // sh + 1, (W - kw) // sw + 1, C), each window's maximum.
        Keep in self.cache where each maximum was (the first one, in row-major order, on a tie)."""
        raise NotImplementedError

    def backward(self, dout):
        """dout: (N, H_out, W_out, C) -> dx: (N, H, W, C): each window's gradient goes to its
        first maximum, the rest get 0; where windows overlap the contributions add."""
        raise NotImplementedError
