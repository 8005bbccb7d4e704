"""Exercise: Conv2d via im2col and col2im (docs/03-conv2d.md). Check it with
`python -m exercises check conv2d_im2col`.

im2col turns every window into a row so that the convolution is one matrix product; col2im is
its adjoint, a scatter-add. Conv2d below uses your two functions.
"""

import numpy as np

import nn.layers


def im2col(x_pad, kh, kw, sh, sw):
    """x_pad: (N, Hp, Wp, C) -> (N, H_out, W_out, kh, kw, C): window (i, j) is
    x_pad[:, i*sh : i*sh + kh, j*sw : j*sw + kw, :], with H_out = (Hp - kh) // sh + 1."""
    raise NotImplementedError


def col2im(dcols, x_shape, pads, sh, sw):
    """dcols: (N, H_out, W_out, kh, kw, C) -> dx: x_shape = (N, H, W, C).

    Add (+=) every window's gradient onto the padded input where the window came from, then cut
    the padding (top, bottom, left, right) = pads off.
    """
    raise NotImplementedError


class Conv2d(nn.layers.Conv2d):
    def forward(self, x, training):
        """x: (N, H, W, C_in) -> (N, H_out, W_out, C_out): pad, im2col, reshape the windows to
        (N*H_out*W_out, kh*kw*C_in) rows, one product with W reshaped to (kh*kw*C_in, C_out), + b."""
        raise NotImplementedError

    def backward(self, dout):
        """dout: (N, H_out, W_out, C_out) -> dx. dW = colsᵀ · dout, db = Σ dout, dcols = dout · Wᵀ,
        then col2im. Fill self.grads["W"] (the shape of W) and self.grads["b"]."""
        raise NotImplementedError
