"""The GPU engine's optimisers: nn.optim's Adam and AdamW with each parameter's update fused
into one kernel (`nn.gpu.kernels`: the ten passes of the reference `Adam._update` in one)."""

import math

from nn import optim
from nn.backend import array_module


class _Fused:
    def _update(self, name, p, g, state):
        xp = array_module(p)
        if xp.__name__ != "cupy":  # a parameter on the host: the reference update
            return super()._update(name, p, g, state)
        from nn.gpu.kernels import kernels

        if not state:
            state.update(m=xp.zeros_like(p), v=xp.zeros_like(p), t=0)
        elif array_module(state["m"]) is not xp:  # loaded from a state_dict
            state.update(m=xp.asarray(state["m"]), v=xp.asarray(state["v"]))
        state["t"] = t = state["t"] + 1
        b1, b2 = self.betas
        decay, wd = 1.0, 0.0
        if self.weight_decay and optim.decays(p):
            if self.decoupled:
                decay = 1.0 - self.lr * self.weight_decay
            else:
                wd = self.weight_decay
        sqrt_bc2 = math.sqrt(1.0 - b2 ** t)
        step = self.lr * sqrt_bc2 / (1.0 - b1 ** t)
        T = p.dtype.type
        kernels()["adam"](g, T(decay), T(wd), T(b1), T(b2), T(step), T(self.eps * sqrt_bc2),
                          p, state["m"], state["v"])


class Adam(_Fused, optim.Adam):
    __doc__ = optim.Adam.__doc__


class AdamW(_Fused, optim.AdamW):
    __doc__ = optim.AdamW.__doc__


OPTIMIZERS = {"adam": Adam, "adamw": AdamW}
