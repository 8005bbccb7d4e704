"""Exercise: Conv2d with plain loops (docs/03-conv2d.md). Check it with
`python -m exercises check conv2d_loops`.

Loops over the output pixels and the kernel offsets are fine here: write the math first, make it
fast afterwards (the conv2d_im2col exercise). Images are NHWC; the constructor is the library's:
self.params["W"] is (kh, kw, C_in, C_out), self.params["b"] is (C_out,), the stride is
(self.sh, self.sw) and the padding self.pads = (top, bottom, left, right).
"""

import numpy as np

import nn.layers


class Conv2d(nn.layers.Conv2d):
    def forward(self, x, training):
        """x: (N, H, W, C_in) -> (N, H_out, W_out, C_out).

        Pad x with zeros (np.pad), then out[n, i, j, o] = b[o] + the sum over a, c, k of
        x_pad[n, i*sh + a, j*sw + c, k] * W[a, c, k, o]. Keep in self.cache what backward needs.
        """
        raise NotImplementedError

    def backward(self, dout):
        """dout: (N, H_out, W_out, C_out) -> dx: (N, H, W, C_in); fill self.grads["W"] and ["b"].

        Run the forward's loops again and send each product's gradient back to both factors:
        dW[a, c, k, o] += x_pad[...] * dout[n, i, j, o] and dx_pad[...] += W[a, c, k, o] * dout[...].
        Cut the padding off dx_pad at the end.
        """
        raise NotImplementedError
