"""The engine's optimisers: `nn.optim`'s Adam and AdamW with all parameters on one flat buffer.

The reference update (`nn.optim.Adam._update`) is a dozen NumPy operations per parameter
array, each allocating its result: about 130 calls a step for the default CNN, on one core.
Here the moments `m` and `v` of all parameters live in two flat buffers (each parameter's state
is a view into them, so `state_dict()` is unchanged) and the same operations, in the same order
with the same constants, run as in-place passes through one scratch buffer over the whole
buffer, one half on each of the engine's threads where it is big enough
(`threads.PARALLEL_MIN_SIZE`). Elementwise passes do not depend on how the buffer is split: the
result is bit-identical to the reference optimiser's.

`FastSequential` keeps its parameters and gradients as views into flat buffers in this same
order (`flat_order`), and the update reads and writes them in place, faster per step for both
models. Parameters laid out otherwise are copied into buffers of the optimiser's and back,
which costs more than the passes save, and cutting the passes into cache-sized blocks lost more
to per-call overhead (the timings: docs/speed.md).
"""

from __future__ import annotations

import math

import numpy as np

from nn import optim
from nn.fast import threads

def flat_order(params: dict[str, np.ndarray]) -> list[str]:
    """The names of `params` in flat-buffer order: the weights that decay first (so the decay
    is one pass over the buffer's leading part), then the rest, each group in model order."""
    return sorted(params, key=lambda k: not optim.decays(params[k]))


def flat_base(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The 1-D array that `arrays` tile exactly, as consecutive contiguous views in this order,
    or None."""
    base = arrays[0].base
    if not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    address = base.ctypes.data
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.ctypes.data != address:
            return None
        address += a.nbytes
    return base if address == base.ctypes.data + base.nbytes else None


class _Flat:
    """The flat layout of a dict of parameters: offsets, and the buffers p, g, m, v, tmp, where
    p and g are the model's own flat buffers when it has them (`borrowed_p`, `borrowed_g`)."""

    def __init__(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
                 state: dict[str, dict], coupled: bool):
        self.names = flat_order(params)
        self.key = tuple((k, p.shape) for k, p in params.items())
        self.dtype = next(iter(params.values())).dtype
        self.shapes = {k: params[k].shape for k in self.names}
        self.slices, offset = {}, 0
        for k in self.names:
            self.slices[k] = slice(offset, offset + params[k].size)
            offset += params[k].size
        self.size = offset
        self.n_decay = sum(params[k].size for k in self.names if optim.decays(params[k]))
        self.p = flat_base([params[k] for k in self.names])
        self.borrowed_p = self.p is not None
        # coupled weight decay changes g: never the model's own gradients
        self.g = None if coupled else flat_base([grads[k] for k in self.names])
        self.borrowed_g = self.g is not None
        if not self.borrowed_p:
            self.p = np.empty(offset, self.dtype)
        if not self.borrowed_g:
            self.g = np.empty(offset, self.dtype)
        self.m, self.v = np.zeros(offset, self.dtype), np.zeros(offset, self.dtype)
        self.tmp = np.empty(offset, self.dtype)
        self.moments = {}  # name -> (m, v): the optimiser's state arrays, views into m and v
        for k in self.names:
            m, v = self.view(self.m, k), self.view(self.v, k)
            if state.get(k):  # from reference steps or a load_state_dict: copied in
                np.copyto(m, state[k]["m"], casting="same_kind")
                np.copyto(v, state[k]["v"], casting="same_kind")
            self.moments[k] = (m, v)

    def view(self, buf: np.ndarray, name: str) -> np.ndarray:
        return buf[self.slices[name]].reshape(self.shapes[name])

    def fits(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             state: dict[str, dict]) -> bool:
        """Whether this layout still serves these params, grads and optimiser state."""
        if self.key != tuple((k, p.shape) for k, p in params.items()) or any(
                state.get(k, {}).get("m") is not self.moments[k][0] for k in params):
            return False
        for buf, borrowed, arrays in ((self.p, self.borrowed_p, params), (self.g, self.borrowed_g, grads)):
            if borrowed and any(arrays[k].base is not buf or arrays[k].ctypes.data !=
                                buf.ctypes.data + self.slices[k].start * buf.itemsize for k in self.names):
                return False
        return True


class FastAdam(optim.Adam):
    """`nn.optim.Adam` on flat buffers (see the module docstring): the same constructor, state
    and results. Parameters of mixed dtypes, or not NumPy arrays, take the reference path."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._flat: _Flat | None = None

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if params.keys() != grads.keys():
            raise ValueError(f"params and grads have different keys: "
                             f"{sorted(params.keys() ^ grads.keys())}")
        for name, p in params.items():
            if grads[name].shape != p.shape:
                raise ValueError(f"grad {name!r} has shape {grads[name].shape}, param has {p.shape}")
        flat = self._layout(params, grads)
        if flat is None:
            self._flat = None
            super().step(params, grads)
            return
        t = 1 + next(iter(self.state.values()), {}).get("t", 0)
        for name in flat.names:
            if not flat.borrowed_p:
                np.copyto(flat.view(flat.p, name), params[name])
            if not flat.borrowed_g:
                np.copyto(flat.view(flat.g, name), grads[name], casting="same_kind")
        self._update_flat(flat, t)
        for name in flat.names:
            if not flat.borrowed_p:
                np.copyto(params[name], flat.view(flat.p, name))
            m, v = flat.moments[name]
            self.state[name] = {"m": m, "v": v, "t": t}

    def _layout(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> _Flat | None:
        """The flat layout (built again when the params, grads or state changed), or None where
        the reference path must run."""
        arrays = [*params.values(), *grads.values()]
        if not params or any(type(a) is not np.ndarray for a in arrays):
            return None
        dtype = arrays[0].dtype
        if dtype.kind != "f" or any(a.dtype != dtype for a in arrays):
            return None
        if self.state and (self.state.keys() != params.keys() or
                           len({st["t"] for st in self.state.values()}) > 1):
            return None  # parameters stepped apart: the reference keeps their own step counts
        if self._flat is None or not self._flat.fits(params, grads, self.state):
            coupled = bool(self.weight_decay) and not self.decoupled
            self._flat = _Flat(params, grads, self.state, coupled)
        return self._flat

    def _update_flat(self, flat: _Flat, t: int) -> None:
        """The reference `_update`'s arithmetic as in-place passes over the flat buffers (tmp the
        scratch: nothing allocated per step), split over the threads."""
        b1, b2 = self.betas
        bc1 = 1.0 - b1 ** t
        sqrt_bc2 = math.sqrt(1.0 - b2 ** t)
        decay = self.weight_decay if flat.n_decay else 0.0
        lr, eps, decoupled = self.lr, self.eps, self.decoupled
        arrays = flat.p, flat.g, flat.m, flat.v, flat.tmp

        def part(lo, hi):
            p, g, m, v, tmp = (a[lo:hi] for a in arrays)
            if decay and lo < flat.n_decay:
                end = min(hi, flat.n_decay) - lo
                if decoupled:
                    p[:end] *= 1.0 - lr * decay
                else:  # the reference's g = g + weight_decay * p, on the optimiser's copy of g
                    g[:end] += np.multiply(p[:end], decay, out=tmp[:end])
            m *= b1
            m += np.multiply(g, 1.0 - b1, out=tmp)
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= 1.0 - b2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += eps * sqrt_bc2
            np.divide(m, tmp, out=tmp)
            tmp *= lr * sqrt_bc2 / bc1
            p -= tmp

        threads.parallel_rows(part, flat.size, flat.size)


class FastAdamW(FastAdam, optim.AdamW):
    """`nn.optim.AdamW` on flat buffers: see `FastAdam`."""


OPTIMIZERS = {"adam": FastAdam, "adamw": FastAdamW}
