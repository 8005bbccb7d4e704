"""Exercise: inverted Dropout (docs/05-dropout-batchnorm.md). Check it with
`python -m exercises check dropout`.

self.p is the probability of dropping an element; draw from self.rng (a numpy Generator), e.g.
keep = self.rng.random(x.shape) >= self.p.
"""

import numpy as np

import nn.layers


class Dropout(nn.layers.Dropout):
    def forward(self, x, training):
        """Training: zero each element with probability p, scale the others by 1 / (1 - p), and
        keep the mask for backward. Inference: return x unchanged."""
        raise NotImplementedError

    def backward(self, dout):
        """dout -> dx: the forward's mask, applied to dout."""
        raise NotImplementedError
