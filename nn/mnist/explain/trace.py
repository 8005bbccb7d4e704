"""The passes of the layers view and the backward view on one image: each layer's output and
the saliency (explain), the gradients of one label's loss (backward).

The forward is the reference layers' (`nn.layers`), on a private copy of the model: the layers
keep a cache for backward only when `training` is true, so the layers whose training forward is
their inference forward (Linear, Conv2d, ReLU, MaxPool2d, Flatten, Tiles, Untile, OuterSum) run
with training=True, and the two that differ (Dropout, BatchNorm) run in inference mode, where
each is a fixed per-channel scale whose backward is `dout * scale`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nn.fast.threads import single_threaded_blas
from nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, \
    OuterSum, ReLU, Tiles, Untile
from nn.losses import softmax, softmax_cross_entropy
from nn.model import Sequential

CACHED = (Linear, Conv2d, MaxPool2d, ReLU, Flatten, Tiles, Untile, OuterSum)  # training forward == inference
SCALED = (Dropout, BatchNorm1d, BatchNorm2d)  # inference forward is x * scale (+ shift) per channel

# Each known layer: its formula (plain text) and the guide's page that derives it.
LAYER_DOCS = {
    "Linear": ("y = x·W + b", "01-linear-relu.md"),
    "ReLU": ("y = max(0, x)", "01-linear-relu.md"),
    "Flatten": ("y = x as one vector, (H, W, C) order", "01-linear-relu.md"),
    "Conv2d": ("y[i,j,c] = b[c] + Σ_u,v,k x[i+u, j+v, k] · W[u,v,k,c]", "03-conv2d.md"),
    "MaxPool2d": ("y[i,j,c] = max of x over the k×k window at (i, j)", "04-maxpool.md"),
    "Dropout": ("y = x (inference: dropout is off)", "05-dropout-batchnorm.md"),
    "BatchNorm1d": ("y = γ · (x − μ_run) / √(σ²_run + ε) + β", "05-dropout-batchnorm.md"),
    "BatchNorm2d": ("y = γ · (x − μ_run) / √(σ²_run + ε) + β", "05-dropout-batchnorm.md"),
    "Tiles": ("the 28×56 pair → two 28×28 digits, read by the same network", "02-softmax-cross-entropy.md"),
    "Untile": ("each digit's 10 scores side by side; p(digit) = softmax(scores)", "02-softmax-cross-entropy.md"),
    "OuterSum": ("score(ab) = s₁(a) + s₂(b), so p(ab) = p₁(a) · p₂(b)", "02-softmax-cross-entropy.md"),
}

# Each known layer's backward pass (plain text): what it sends down, and its weights' gradient.
BACKWARD_FORMULAS = {
    "Linear": "dx = dy·Wᵀ,  dW = xᵀ·dy,  db = Σ dy",
    "ReLU": "dx = dy where x > 0, else 0",
    "Flatten": "dx = dy, reshaped back into the maps",
    "Conv2d": "dW[u,v,k,c] = Σ_i,j x[i+u, j+v, k] · dy[i,j,c],  db[c] = Σ_i,j dy[i,j,c],  dx = dy ⋆ W flipped",
    "MaxPool2d": "dx = dy at each window's maximum, 0 elsewhere",
    "Dropout": "dx = dy (inference: dropout is off)",
    "BatchNorm1d": "dx = dy · γ / √(σ²_run + ε),  dγ = Σ dy · x̂,  dβ = Σ dy",
    "BatchNorm2d": "dx = dy · γ / √(σ²_run + ε),  dγ = Σ dy · x̂,  dβ = Σ dy",
    "Tiles": "dx = the two digits' gradients side by side again",
    "Untile": "each digit's 10 score gradients go back to its own tile",
    "OuterSum": "ds₁(a) = Σ_b dy(ab),  ds₂(b) = Σ_a dy(ab)",
}
LOSS_FORMULA = "L = −log p(label),  dL/dscores = p − onehot(label)"


@dataclass
class Trace:
    """One image through a model: each layer's output, the logits' softmax and the saliency."""

    net: Sequential
    input: np.ndarray            # (1, H, W, 1) the normalized input
    outputs: list[np.ndarray]    # layer i's output, (rows, ...): rows = tiles per image
    proba: np.ndarray            # (K,) softmax of the last output
    saliency: np.ndarray | None  # (H, W) d(score of the top class)/d(input); None if a layer has no backward here

    @property
    def top(self) -> int:
        return int(self.proba.argmax())


def reference_copy(net: Sequential) -> Sequential:
    """The plain reference layers with `net`'s weights (whatever engine `net` runs on)."""
    copy = Sequential.from_spec(net.spec, np.random.default_rng(0))  # rng: Dropout's, never drawn here
    copy.load_state_dict(net.state_dict())
    return copy


def _scale(layer: Layer, x: np.ndarray) -> np.ndarray:
    """d(output)/d(input) of a SCALED layer in inference mode, broadcastable against x."""
    if isinstance(layer, Dropout):
        return np.ones(1, x.dtype)
    return layer.params["gamma"] / np.sqrt(layer.buffers["running_var"] + layer.eps)  # (C,)


def explain(net: Sequential, x: np.ndarray) -> Trace:
    """Run one image x: (1, H, W, 1) through the reference layers `net` (see reference_copy) in
    inference mode, keep every layer's output, then backward the top class's score to the input."""
    if x.shape[0] != 1:
        raise ValueError(f"explain takes one image, got a batch of {x.shape[0]}")
    with single_threaded_blas():  # one image: BLAS threads cost more than they give (2x under load)
        return _explain(net, x)


def _forward(net: Sequential, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray | None] | None]:
    """Each layer's output in inference mode, with the caches backward needs, and each SCALED
    layer's d(output)/d(input) (None for a CACHED one); the second is None if a layer is unknown."""
    outputs, scales, backward_ok = [], [], True
    h = x
    for layer in net.layers:
        if isinstance(layer, CACHED):
            h = layer.forward(h, training=True)  # the same numbers as training=False, plus the cache
            scales.append(None)
        else:
            if isinstance(layer, SCALED):
                scales.append(_scale(layer, h))
            else:
                backward_ok = False  # a layer this module does not know: outputs only
                scales.append(None)
            h = layer.forward(h, training=False)
        outputs.append(h)
    return outputs, scales if backward_ok else None


def _explain(net: Sequential, x: np.ndarray) -> Trace:
    outputs, scales = _forward(net, x)
    h = outputs[-1]
    proba = softmax(h.astype(np.float64))[0]
    saliency = None
    if scales is not None:
        dout = np.zeros_like(h)
        dout[0, proba.argmax()] = 1  # d(score of the top class)/d(logits)
        saliency = _backward(net, x, outputs, scales, dout)[1][0, :, :, 0]
    return Trace(net=net, input=x, outputs=outputs, proba=proba, saliency=saliency)


def _backward(net: Sequential, x: np.ndarray, outputs: list[np.ndarray], scales: list[np.ndarray | None],
              dout: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Back from dout = d(something)/d(last output) through every layer, after `_forward`:
    -> (d/d(layer i's output) for each i, d/d(x)). Each layer's `grads` is filled as its own
    backward fills it; a BatchNorm's (inference mode: a fixed scale) with the running statistics,
    dγ = Σ dy · x̂ and dβ = Σ dy."""
    douts: list = [None] * len(net.layers)
    for i in range(len(net.layers) - 1, -1, -1):
        layer, douts[i] = net.layers[i], dout
        if scales[i] is None:
            dout = layer.backward(dout)
            continue
        if isinstance(layer, (BatchNorm1d, BatchNorm2d)):
            x_in = outputs[i - 1] if i else x
            ch = x_in.shape[-1]
            x_hat = (x_in.reshape(-1, ch) - layer.buffers["running_mean"]) / \
                np.sqrt(layer.buffers["running_var"] + layer.eps)          # (M, C), running statistics
            d2 = dout.reshape(-1, ch)
            layer.grads = {"gamma": (d2 * x_hat).sum(axis=0), "beta": d2.sum(axis=0)}
        dout = dout * scales[i]
    return douts, dout


@dataclass
class Gradients:
    """The loss of one label on one image, back through every layer: the backward view."""

    trace: Trace                          # the forward (saliency None: this pass is the loss's)
    label: int                            # the class whose loss this is
    loss: float                           # -log p(label)
    douts: list[np.ndarray]               # dL/d(layer i's output), shaped as trace.outputs[i]
    grads: list[dict[str, np.ndarray]]    # dL/d(layer i's params), keyed as its params ({} without)
    dinput: np.ndarray                    # (H, W) dL/d(input)


def backward(net: Sequential, x: np.ndarray, label: int | None = None) -> Gradients:
    """One image x: (1, H, W, 1) through the reference layers `net` in inference mode, then one
    backward of the cross-entropy loss of `label` (the top class if None) down to the input.

    Every layer's `grads` is filled (see _backward), so `net.grads` is the whole gradient: an
    optimiser's `step(net.params, net.grads)` is one step of gradient descent on this image.
    ValueError if a layer is unknown here or `label` is not a class.
    """
    if x.shape[0] != 1:
        raise ValueError(f"backward takes one image, got a batch of {x.shape[0]}")
    with single_threaded_blas():
        outputs, scales = _forward(net, x)
        if scales is None:
            raise ValueError("the model has a layer without a backward here")
        logits = outputs[-1]
        proba = softmax(logits.astype(np.float64))[0]
        c = int(proba.argmax()) if label is None else label
        if not 0 <= c < len(proba):
            raise ValueError(f"label must be a class from 0 to {len(proba) - 1}, not {c}")
        loss, dlogits = softmax_cross_entropy(logits, np.array([c]))  # p - onehot(c)
        douts, dx = _backward(net, x, outputs, scales, dlogits)
    trace = Trace(net=net, input=x, outputs=outputs, proba=proba, saliency=None)
    return Gradients(trace=trace, label=c, loss=float(loss), douts=douts,
                     grads=[{k: layer.grads[k] for k in layer.params} for layer in net.layers],
                     dinput=dx[0, :, :, 0])


def untile_probs(trace: Trace, i: int) -> np.ndarray:
    """(parts, F) softmax of each tile's scores, from Untile's output at index i."""
    layer = trace.net.layers[i]
    return softmax(trace.outputs[i].reshape(layer.parts, -1).astype(np.float64))


def pair_top(trace: Trace, i: int, classes: list[str], k: int = 3) -> list[dict]:
    """OuterSum at i after an Untile: the k best pairs, each with its two digits' probabilities."""
    proba = softmax(trace.outputs[i].astype(np.float64))[0]
    digits = untile_probs(trace, i - 1) if i and isinstance(trace.net.layers[i - 1], Untile) else None
    rows = []
    for c in np.argsort(-proba, kind="stable")[:k]:
        row = {"label": classes[c] if c < len(classes) else str(c), "probability": round(float(proba[c]), 6)}
        if digits is not None:
            a, b = divmod(int(c), digits.shape[1])
            row["digits"] = [{"label": str(a), "probability": round(float(digits[0, a]), 6)},
                             {"label": str(b), "probability": round(float(digits[1, b]), 6)}]
        rows.append(row)
    return rows
