"""Exercise: Linear (docs/01-linear-relu.md). Check it with `python -m exercises check linear`.

Write `forward` and `backward`; the constructor is the library's, so `self.params["W"]` is
(in_features, out_features) and `self.params["b"]` is (out_features,).
"""

import nn.layers


class Linear(nn.layers.Linear):
    def forward(self, x, training):
        """x: (N, in) -> (N, out), y = x @ W + b. Keep in self.cache what backward needs."""
        raise NotImplementedError

    def backward(self, dout):
        """dout: (N, out) -> dx: (N, in). Fill self.grads["W"] (in, out) and self.grads["b"] (out,)."""
        raise NotImplementedError
