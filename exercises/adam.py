"""Exercise: Adam (docs/07-optimizers.md). Check it with `python -m exercises check adam`.

The library's Optimizer.step calls `_update(name, p, g, state)` for every parameter; `state` is a
dict of your own that persists between steps (empty at the first). lr is self.lr, the betas
self.betas, eps self.eps. Update p in place (p -= ...).
"""

import numpy as np

import nn.optim


class Adam(nn.optim.Adam):
    def _update(self, name, p, g, state):
        """m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g²; t counts the steps from 1;
        p <- p - lr · m̂ / (√v̂ + eps) with m̂ = m / (1 - b1^t), v̂ = v / (1 - b2^t)."""
        raise NotImplementedError
