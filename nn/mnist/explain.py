"""What every layer of a model computes on one image, which pixels decided it, and the gradients.

    trace = explain(net, x)          # x: (1, 28, W, 1) normalized; one inference-mode forward
    trace.outputs[i]                 # layer i's output for this image: (rows, ...), rows = 2 after Tiles
    trace.saliency                   # (28, W): d(top class's score) / d(input), by our own backward
    view_json(trace, classes)        # what `POST /api/explain` returns (maps as PNG data URLs)
    sheet(trace, image, classes)     # the same as one Pillow picture (`nn explain`)
    grad = backward(net, x, label)   # the backward view: the loss of `label`, back through every layer
    grad.douts[i], grad.grads[i]     # dL/d(layer i's output), dL/d(its weights)
    backward_json(grad, classes)     # `POST /api/backward`; backward_sheet: `nn explain --backward`

The forward is the reference layers' (`nn.layers`), on a private copy of the model: the layers
keep a cache for backward only when `training` is true, so the layers whose training forward is
their inference forward (Linear, Conv2d, ReLU, MaxPool2d, Flatten, Tiles, Untile, OuterSum) run
with training=True, and the two that differ (Dropout, BatchNorm) run in inference mode, where
each is a fixed per-channel scale whose backward is `dout * scale`.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageDraw

from nn.fast.threads import single_threaded_blas
from nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, \
    OuterSum, ReLU, Tiles, Untile
from nn.losses import softmax, softmax_cross_entropy
from nn.mnist.pictures import _font, png_bytes
from nn.model import Sequential

CACHED = (Linear, Conv2d, MaxPool2d, ReLU, Flatten, Tiles, Untile, OuterSum)  # training forward == inference
SCALED = (Dropout, BatchNorm1d, BatchNorm2d)  # inference forward is x * scale (+ shift) per channel
MAP_COLUMNS = 8  # channels per row of a layer's map atlas

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


class LabelError(ValueError):
    """A label that is not one of the model's classes (`nn explain --backward --label`)."""


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


# --- pictures ---------------------------------------------------------------------------


def _gray(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((a - lo) * (255 / (hi - lo if hi > lo else 1)), 0, 255).astype(np.uint8)


def _grid(tiles: np.ndarray, columns: int, gap) -> np.ndarray:
    """(n, h, w[, 3]) uint8 tiles -> one grid, tile t at row t // columns, column t % columns,
    1 px gaps of colour `gap`."""
    n, h, w = tiles.shape[:3]
    cols = min(columns, n)
    rows = -(-n // cols)
    grid = np.empty((rows * (h + 1) - 1, cols * (w + 1) - 1, *tiles.shape[3:]), np.uint8)
    grid[...] = gap
    for t in range(n):
        r, q = divmod(t, cols)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = tiles[t]
    return grid


def map_atlas(maps: np.ndarray, lo: float, hi: float, columns: int = MAP_COLUMNS) -> np.ndarray:
    """(H, W, C) channel maps -> one grayscale (rows*(H+1)-1, cols*(W+1)-1) uint8 grid, channel c
    at row c // cols, column c % cols, 1 px gaps (mid-gray), values lo..hi as black..white."""
    return _grid(_gray(maps, lo, hi).transpose(2, 0, 1), columns, 128)


def diverging(a: np.ndarray, m: float) -> np.ndarray:
    """Values -> (..., 3) uint8 on a diverging scale: white at 0, red at +m, blue at -m."""
    t = np.clip(a / (m or 1.0), -1, 1)
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    return np.round(np.stack([255 - 215 * neg, 255 - 195 * (pos + neg), 255 - 215 * pos], axis=-1)).astype(np.uint8)


LEVELS = 255  # diverging levels: index 0 is -m, 127 zero, 254 +m; index GAP is the grids' gaps
GAP = 255
PALETTE = np.concatenate([diverging(np.linspace(-1, 1, LEVELS), 1.0), [[150, 150, 150]]]).astype(np.uint8)


def diverging_index(a: np.ndarray, m: float) -> np.ndarray:
    """Values -> uint8 indices into PALETTE (0: -m, 127: 0, 254: +m)."""
    return np.round((np.clip(a / (m or 1.0), -1, 1) + 1) * (LEVELS - 1) / 2).astype(np.uint8)


def paletted(index: np.ndarray) -> Image.Image:
    """Indices into PALETTE -> a one-byte-per-pixel PNG-ready picture (a third of RGB's bytes)."""
    im = Image.fromarray(index, "P")
    im.putpalette(PALETTE.ravel().tolist())
    return im


def grad_atlas(maps: np.ndarray, m: float, columns: int = MAP_COLUMNS) -> np.ndarray:
    """(H, W, C) gradient maps -> PALETTE indices laid out as map_atlas lays them, scale ±m."""
    return _grid(diverging_index(maps.transpose(2, 0, 1), m), columns, GAP)


def kernel_atlas(w: np.ndarray, m: float) -> np.ndarray:
    """A Conv2d's (kh, kw, C_in, C_out) weights (or their gradient) -> PALETTE indices, scale ±m:
    a row per output channel, its C_in kernels across (one input channel: 8 a row)."""
    kh, kw, c_in, c_out = w.shape
    tiles = diverging_index(w.transpose(3, 2, 0, 1).reshape(c_out * c_in, kh, kw), m)  # (C_out*C_in, kh, kw)
    return _grid(tiles, c_in if c_in > 1 else MAP_COLUMNS, GAP)


def saliency_rgba(saliency: np.ndarray) -> np.ndarray:
    """(H, W) gradient -> (H, W, 4) uint8: red where more ink raises the score, blue where it
    lowers it, opacity |g| / max |g|."""
    m = float(np.abs(saliency).max()) or 1.0
    a = saliency / m
    rgba = np.zeros((*a.shape, 4), np.uint8)
    rgba[..., 0] = np.where(a > 0, 255, 40)
    rgba[..., 1] = np.where(a > 0, 60, 120)
    rgba[..., 2] = np.where(a > 0, 40, 255)
    rgba[..., 3] = np.round(np.abs(a) * 255)
    return rgba


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def _previous_conv(net: Sequential, i: int) -> int | None:
    """The Conv2d whose channels layer i's maps are (itself, or the last one before it)."""
    for j in range(i, -1, -1):
        if isinstance(net.layers[j], Conv2d):
            return j
        if not isinstance(net.layers[j], (ReLU, MaxPool2d, BatchNorm2d, Dropout)):
            return None
    return None


def _untile_probs(trace: Trace, i: int) -> np.ndarray:
    """(parts, F) softmax of each tile's scores, from Untile's output at index i."""
    layer = trace.net.layers[i]
    return softmax(trace.outputs[i].reshape(layer.parts, -1).astype(np.float64))


def _pair_top(trace: Trace, i: int, classes: list[str], k: int = 3) -> list[dict]:
    """OuterSum at i after an Untile: the k best pairs, each with its two digits' probabilities."""
    proba = softmax(trace.outputs[i].astype(np.float64))[0]
    digits = _untile_probs(trace, i - 1) if i and isinstance(trace.net.layers[i - 1], Untile) else None
    rows = []
    for c in np.argsort(-proba, kind="stable")[:k]:
        row = {"label": classes[c] if c < len(classes) else str(c), "probability": round(float(proba[c]), 6)}
        if digits is not None:
            a, b = divmod(int(c), digits.shape[1])
            row["digits"] = [{"label": str(a), "probability": round(float(digits[0, a]), 6)},
                             {"label": str(b), "probability": round(float(digits[1, b]), 6)}]
        rows.append(row)
    return rows


def layer_views(trace: Trace, classes: list[str]) -> list[dict]:
    """Each layer's output as the layers view shows it (the JSON of `POST /api/explain`)."""
    views = []
    known = all(type(layer).__name__ in LAYER_DOCS for layer in trace.net.layers)
    for i, (layer, out) in enumerate(zip(trace.net.layers, trace.outputs)):
        name = type(layer).__name__
        view = {"index": i, "type": name, "spec": layer.spec, "shape": list(out.shape[1:]),
                "tiles": len(out)}
        if not known:  # a model the view does not know: a plain list of outputs
            view.update(kind="list", min=float(out.min()), max=float(out.max()), mean=float(out.mean()))
        elif out.ndim == 4:
            lo, hi = float(out.min()), float(out.max())
            view.update(kind="maps", channels=out.shape[3], columns=min(MAP_COLUMNS, out.shape[3]),
                        range=[lo, hi], kernel=_previous_conv(trace.net, i),
                        maps=[data_url(Image.fromarray(map_atlas(t, lo, hi))) for t in out])
        elif name == "Untile":
            view.update(kind="digits", scores=np.round(out.reshape(layer.parts, -1), 4).tolist(),
                        probabilities=np.round(_untile_probs(trace, i), 6).tolist())
        elif name == "OuterSum":
            view.update(kind="pairs", scores=np.round(out[0], 4).tolist(), top=_pair_top(trace, i, classes))
        elif name == "Flatten":
            view.update(kind="flat")  # the maps above as one vector: nothing new to draw
        else:
            view.update(kind="bars", values=np.round(out, 4).tolist())
            if i == len(trace.outputs) - 1 and out.shape[1] == len(classes) <= 20:
                view["labels"] = classes  # the scores of the classes
        if name in LAYER_DOCS:
            view["formula"], view["doc"] = LAYER_DOCS[name]
        views.append(view)
    return views


def view_json(trace: Trace, classes: list[str]) -> dict:
    """Every layer's view, the saliency (PNG data URL, RGBA to lay over the input) and its scale."""
    sal = trace.saliency
    return {
        "layers": layer_views(trace, classes),
        "saliency": None if sal is None else data_url(Image.fromarray(saliency_rgba(sal), "RGBA")),
        "saliency_max": None if sal is None else float(np.abs(sal).max()),
        "top": classes[trace.top] if trace.top < len(classes) else str(trace.top),
    }


def kernel_json(net: Sequential, index: int, channel: int) -> dict:
    """Output channel `channel` of the Conv2d at `index`: its weights (C_in, kh, kw), its bias and
    a picture of its C_in kernels (red positive, blue negative). ValueError if there is none."""
    if not 0 <= index < len(net.layers) or not isinstance(net.layers[index], Conv2d):
        raise ValueError(f"layer {index} is not a Conv2d")
    w = net.layers[index].params["W"]  # (kh, kw, C_in, C_out)
    if not 0 <= channel < w.shape[3]:
        raise ValueError(f"channel must be from 0 to {w.shape[3] - 1}, not {channel}")
    k = w[:, :, :, channel].transpose(2, 0, 1)  # (C_in, kh, kw)
    bias = net.layers[index].params.get("b")
    m = float(np.abs(k).max()) or 1.0
    pos, neg = np.clip(k / m, 0, 1), np.clip(-k / m, 0, 1)
    rgb = np.stack([255 - 200 * neg, 255 - 200 * (pos + neg), 255 - 200 * pos], axis=-1)  # (C_in, kh, kw, 3)
    cols = min(MAP_COLUMNS, len(k))
    atlas = _grid(rgb.astype(np.uint8), cols, 160)
    strongest = int(np.abs(k).reshape(len(k), -1).sum(axis=1).argmax())
    return {"layer": index, "channel": channel, "weights": np.round(k, 4).tolist(),
            "bias": None if bias is None else round(float(bias[channel]), 4), "strongest": strongest,
            "columns": cols, "picture": data_url(Image.fromarray(atlas, "RGB")),
            "formula": LAYER_DOCS["Conv2d"][0], "doc": LAYER_DOCS["Conv2d"][1]}


# --- the backward view ------------------------------------------------------------------

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
MATRIX_ROWS = 16  # a Linear's dW is drawn for its output units with the largest gradient, at most this many


def _sig(a: np.ndarray, digits: int = 4) -> list:
    """Nested lists of floats to `digits` significant digits: gradients are small, not few."""
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(a).tolist() if a.size else a.tolist()


def _absmax(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


def _param_views(layer: Layer, grads: dict[str, np.ndarray]) -> list[dict]:
    """A layer's weights' gradients as the backward view shows them."""
    views = []
    for name, g in grads.items():
        view = {"name": name, "shape": list(g.shape), "max": _absmax(g)}
        if isinstance(layer, Conv2d) and name == "W":
            w = layer.params["W"]
            view.update(kind="kernels", columns=g.shape[2] if g.shape[2] > 1 else MAP_COLUMNS, weights_max=_absmax(w),
                        weights=data_url(paletted(kernel_atlas(w, _absmax(w)))),
                        grad=data_url(paletted(kernel_atlas(g, view["max"]))))
        elif g.ndim == 2:  # Linear's W (in, out): a row per output unit, the strongest MATRIX_ROWS
            rows = np.sort(np.argsort(-np.abs(g).sum(axis=0), kind="stable")[:MATRIX_ROWS])
            view.update(kind="matrix", rows=rows.tolist(),
                        grad=data_url(paletted(diverging_index(g[:, rows].T, view["max"]))))
        elif g.ndim == 1:
            view.update(kind="bars", values=_sig(g))
        else:
            view.update(kind="list", min=float(g.min()), mean=float(g.mean()))
        views.append(view)
    return views


def backward_views(grad: Gradients, classes: list[str]) -> list[dict]:
    """Each layer's dL/d(output) and its weights' gradient (the JSON of `POST /api/backward`)."""
    views = []
    net = grad.trace.net
    for i, (layer, d) in enumerate(zip(net.layers, grad.douts)):
        name = type(layer).__name__
        m = _absmax(d)
        view = {"index": i, "type": name, "spec": layer.spec, "shape": list(d.shape[1:]), "tiles": len(d), "max": m}
        if d.ndim == 4:
            view.update(kind="maps", channels=d.shape[3], columns=min(MAP_COLUMNS, d.shape[3]),
                        maps=[data_url(paletted(grad_atlas(t, m))) for t in d])
        elif name == "Flatten":
            view.update(kind="flat")
        else:
            values = d.reshape(layer.parts, -1) if name == "Untile" else d
            view.update(kind="bars", values=_sig(values))
            if i == len(net.layers) - 1 and d.shape[1] == len(classes) <= 20:
                view["labels"] = classes
            elif name == "Untile":
                view["labels"] = [str(k) for k in range(values.shape[1])]
        view["params"] = _param_views(layer, grad.grads[i])
        view["formula"] = BACKWARD_FORMULAS[name] + ("   ·   " + LOSS_FORMULA if i == len(net.layers) - 1 else "")
        view["doc"] = LAYER_DOCS[name][1]
        views.append(view)
    return views


def backward_json(grad: Gradients, classes: list[str]) -> dict:
    """The backward view: the label and its loss, each layer's gradients, dL/d(input) as a heat map."""
    label = classes[grad.label] if grad.label < len(classes) else str(grad.label)
    return {
        "backward": {"label": label, "loss": round(grad.loss, 6),
                     "probability": round(float(grad.trace.proba[grad.label]), 6),
                     "layers": backward_views(grad, classes),
                     "input": data_url(paletted(diverging_index(grad.dinput, _absmax(grad.dinput)))),
                     "input_max": _absmax(grad.dinput)},
    }


# --- the sheet (`nn explain`) ------------------------------------------------------------

SHEET_WIDTH = 1000  # px; rows wrap their pictures to this width
PAD = 10
# Pillow's default font has no glyphs for these: the sheet spells them in ASCII
ASCII = str.maketrans({"→": "->", "×": "x", "·": "*", "Σ": "sum ", "√": "sqrt", "₁": "1", "₂": "2",
                       "γ": "gamma", "β": "beta", "μ": "mu", "σ": "sigma", "²": "^2", "ε": "eps", "−": "-", "ᵀ": "^T", "\u0302": "_hat",
                       "⋆": "*", "±": "+-"})


def _text(lines: list[str], width: int) -> Image.Image:
    im = Image.new("RGB", (width, 16 * len(lines) + 4), "white")
    d = ImageDraw.Draw(im)
    for n, line in enumerate(lines):
        d.text((0, 2 + 16 * n), line.translate(ASCII), font=_font(13), fill="black")
    return im


def _inked(image: np.ndarray, scale: int) -> Image.Image:
    """(H, W) uint8 light-on-dark MNIST image -> black on white RGB, scaled."""
    im = Image.fromarray(255 - image).convert("RGB")
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def _bars(values: np.ndarray, width: int, height: int, labels: list[str] | None = None) -> Image.Image:
    """A bar chart of a vector (values >= 0 up, < 0 down from a zero line)."""
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    n = len(values)
    top = max(float(values.max()), 0.0)
    bottom = min(float(values.min()), 0.0)
    span = (top - bottom) or 1.0
    label_h = 12 if labels else 0
    plot_h = height - label_h
    zero = plot_h * top / span
    step = width / n
    for j, v in enumerate(values):
        y = zero - plot_h * v / span
        x0, x1 = j * step, max(j * step, (j + 1) * step - (1 if step >= 3 else 0))
        d.rectangle((x0, min(y, zero), x1, max(y, zero)), fill=(47, 91, 211) if v >= 0 else (181, 71, 8))
        if labels:
            d.text((x0 + step / 2, height - 1), labels[j], anchor="md", fill="black", font=_font(10))
    d.line((0, zero, width, zero), fill=(170, 170, 170))
    return im


def _layer_pictures(trace: Trace, i: int, classes: list[str]) -> list[Image.Image]:
    layer, out = trace.net.layers[i], trace.outputs[i]
    name = type(layer).__name__
    if out.ndim == 4:
        lo, hi = float(out.min()), float(out.max())
        scale = 3 if out.shape[3] == 1 else 2 if out.shape[1] <= 14 else 1
        atlases = [Image.fromarray(map_atlas(t, lo, hi)).convert("RGB") for t in out]
        return [a.resize((a.width * scale, a.height * scale), Image.NEAREST) for a in atlases]
    if name == "Untile" and name in LAYER_DOCS:
        probs = _untile_probs(trace, i)
        return [_bars(p, 200, 70, [str(d) for d in range(len(p))]) for p in probs]
    if name == "OuterSum" and name in LAYER_DOCS:
        proba = softmax(out.astype(np.float64))[0]
        k = int(round(np.sqrt(len(proba))))
        grid = (255 - 255 * np.sqrt(proba.reshape(k, k))).astype(np.uint8) if k * k == len(proba) \
            else (255 - 255 * proba[None]).astype(np.uint8)
        im = Image.fromarray(grid).convert("RGB")
        lines = ["p(ab) of all pairs: first digit down, second across (dark: likely)"]
        for t in _pair_top(trace, i, classes):
            if "digits" in t:
                (a, pa), (b, pb) = ((d["label"], d["probability"]) for d in t["digits"])
                lines.append(f"{t['label']}: p({a}) x p({b}) = {pa:.3f} x {pb:.3f} = {t['probability']:.3f}")
            else:
                lines.append(f"{t['label']}: {t['probability']:.3f}")
        return [im.resize((im.width * 12, im.height * 12), Image.NEAREST), _text(lines, 520)]
    if out.ndim == 2 and name != "Flatten":
        labels = classes if i == len(trace.outputs) - 1 and out.shape[1] == len(classes) <= 20 else None
        return [_bars(row, min(SHEET_WIDTH // len(out) - 2 * PAD, max(200, 2 * out.shape[1])), 62 if labels else 50,
                      labels) for row in out]
    return []


def sheet(trace: Trace, image: np.ndarray, classes: list[str], title: str = "") -> Image.Image:
    """The layers view as one picture: the input and its saliency, then one band per layer
    (its maps per tile, bars, digit or pair probabilities), then the prediction. image: (H, W) uint8."""
    bands: list[tuple[str, list[Image.Image]]] = []
    inp = _inked(image, 4)
    over = Image.fromarray(saliency_rgba(trace.saliency), "RGBA").resize(inp.size, Image.NEAREST) \
        if trace.saliency is not None else None
    sal = inp.copy()
    if over is not None:
        sal.paste(over, (0, 0), over)
    bands.append(("input (as the network sees it)  ·  saliency: red raises the top score, blue lowers it",
                  [inp, sal] if over is not None else [inp]))
    for i, layer in enumerate(trace.net.layers):
        out = trace.outputs[i]
        shape = "×".join(map(str, out.shape[1:]))
        tiles = f" per digit ×{len(out)}" if len(out) > 1 else ""
        caption = f"{i}  {layer!r}  →  {shape}{tiles}"
        if type(layer).__name__ in LAYER_DOCS:
            caption += f"     {LAYER_DOCS[type(layer).__name__][0]}"
        bands.append((caption, _layer_pictures(trace, i, classes)))
    return _compose(title or "nn explain", bands, f"reads {_verdict(trace, classes)}")


def _verdict(trace: Trace, classes: list[str]) -> str:
    top = [(classes[c] if c < len(classes) else str(c), trace.proba[c])
           for c in np.argsort(-trace.proba, kind="stable")[:3]]
    return "  ".join(f"{label} {p:.1%}" for label, p in top)


def _compose(title: str, bands: list[tuple[str, list[Image.Image]]], footer: str) -> Image.Image:
    """The sheet: a title, then each band a caption line and its pictures left to right, wrapping
    at the width, then a footer line."""
    font, small = _font(14), _font(11)
    placed, y = [], PAD + 24
    for caption, pics in bands:
        placed.append(("text", caption.translate(ASCII), (PAD, y)))
        y += 18
        x, row_h = PAD, 0
        for pic in pics:
            if x > PAD and x + pic.width > SHEET_WIDTH - PAD:
                x, y, row_h = PAD, y + row_h + PAD, 0
            placed.append(("image", pic, (x, y)))
            x += pic.width + PAD
            row_h = max(row_h, pic.height)
        y += row_h + PAD
    height = y + 30
    out = Image.new("RGB", (SHEET_WIDTH, height), "white")
    d = ImageDraw.Draw(out)
    d.text((PAD, PAD), title.translate(ASCII), font=font, fill="black")
    for kind, what, pos in placed:
        if kind == "text":
            d.text(pos, what, font=small, fill=(60, 60, 60))
        else:
            out.paste(what, pos)
    d.text((PAD, height - 22), footer.translate(ASCII), font=font, fill="black")
    return out


def _zoomed(index: np.ndarray, scale: int) -> Image.Image:
    im = paletted(index).convert("RGB")
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST)


def _grad_pictures(grad: Gradients, i: int) -> list[Image.Image]:
    """Layer i's dL/d(output) (maps per tile or bars) and its weights' gradients, for the sheet."""
    layer, d = grad.trace.net.layers[i], grad.douts[i]
    m = _absmax(d)
    pics: list[Image.Image] = []
    if d.ndim == 4:
        scale = 3 if d.shape[3] == 1 else 2 if d.shape[1] <= 14 else 1
        pics += [_zoomed(grad_atlas(t, m), scale) for t in d]
    elif type(layer).__name__ != "Flatten":
        rows = d.reshape(layer.parts, -1) if isinstance(layer, Untile) else d
        pics += [_bars(r, min(SHEET_WIDTH // len(rows) - 2 * PAD, max(200, 2 * rows.shape[1])), 50) for r in rows]
    for name, g in grad.grads[i].items():
        gm = _absmax(g)
        if isinstance(layer, Conv2d) and name == "W":
            w = layer.params["W"]
            pics += [_zoomed(kernel_atlas(w, _absmax(w)), 4), _zoomed(kernel_atlas(g, gm), 4)]
        elif g.ndim == 2:
            rows = np.sort(np.argsort(-np.abs(g).sum(axis=0), kind="stable")[:MATRIX_ROWS])
            im = paletted(diverging_index(g[:, rows].T, gm)).convert("RGB")
            pics.append(im.resize((min(im.width, SHEET_WIDTH - 2 * PAD), im.height * 4), Image.NEAREST))
        else:
            pics.append(_bars(g, min(SHEET_WIDTH - 2 * PAD, max(200, 2 * len(g))), 40))
    return pics


def backward_sheet(grad: Gradients, image: np.ndarray, classes: list[str], title: str = "") -> Image.Image:
    """The backward view as one picture: a band per layer from the loss down (dL/d(output), then
    its weights' gradients: a convolution's kernels and their gradient side by side), then the
    input and dL/d(input). Red raises the loss, blue lowers it, white: no effect. image: (H, W) uint8."""
    label = classes[grad.label] if grad.label < len(classes) else str(grad.label)
    bands: list[tuple[str, list[Image.Image]]] = [(
        f"the loss of the label {label}: L = -log p({label}) = {grad.loss:.4f}   "
        f"(red: raising the value raises the loss, blue: lowers it; each row to its own ±max)", [])]
    for i in range(len(grad.douts) - 1, -1, -1):
        layer = grad.trace.net.layers[i]
        d = grad.douts[i]
        caption = f"{i}  {layer!r}  dL/d(output) {'×'.join(map(str, d.shape[1:]))}" + \
            (f" per digit ×{len(d)}" if len(d) > 1 else "") + f"  max {_absmax(d):.3g}     " + \
            BACKWARD_FORMULAS[type(layer).__name__]
        if grad.grads[i]:
            caption += "   [then: " + ", ".join(
                f"d{k}" + (" beside W" if k == "W" and isinstance(layer, Conv2d) else
                           f" of {min(MATRIX_ROWS, g.shape[1])} units" if g.ndim == 2 else "")
                for k, g in grad.grads[i].items()) + "]"
        bands.append((caption, _grad_pictures(grad, i)))
    bands.append((f"input (as the network sees it)  ·  dL/d(input), max {_absmax(grad.dinput):.3g}",
                  [_inked(image, 4), _zoomed(diverging_index(grad.dinput, _absmax(grad.dinput)), 4)]))
    return _compose(title or "nn explain --backward", bands, f"reads {_verdict(grad.trace, classes)}")


def explain_file(image: str | os.PathLike | BinaryIO, model: str | os.PathLike,
                 gradients: bool = False, label: str | None = None,
                 name: str | None = None) -> tuple[Image.Image, str, float]:
    """`nn explain`: read `image` (a path, or a file object called `name`) as `nn predict`
    does, run it through the model at `model`; with `gradients` (`nn explain --backward`), the
    gradients of the loss of `label` (the top class if None) instead.
    -> (the sheet, the top label, its probability). ModelFileError, ImageError or OSError if not;
    LabelError if `label` is not one of the model's classes."""
    from nn.mnist.classify import load_classifier
    from nn.mnist.modelfile import normalize
    from nn.mnist.preprocess import preprocess

    classifier = load_classifier(model, engine="reference")
    if label is not None and label not in classifier.classes:
        raise LabelError(f"label must be one of the model's classes ({classifier.classes[0]} to "
                         f"{classifier.classes[-1]}), not {label!r}")
    x = preprocess(image, classifier.width)  # (28, W) uint8
    h = normalize(x[None], classifier.info.normalization)
    if gradients:
        grad = backward(classifier.net, h, None if label is None else classifier.classes.index(label))
        trace = grad.trace
    else:
        trace = explain(classifier.net, h)
    top, p = classifier.classes[trace.top], float(trace.proba[trace.top])
    title = f"nn explain {name or Path(image).name} with {Path(model).name}: reads {top} ({p:.1%})"
    if gradients:
        label = classifier.classes[grad.label]
        return backward_sheet(grad, x, classifier.classes, f"{title}; the gradients of the loss of {label}"), top, p
    return sheet(trace, x, classifier.classes, title), top, p
