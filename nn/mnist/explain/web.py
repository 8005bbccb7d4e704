"""The JSON of the layers view and the backward view (`POST /api/explain`, `POST /api/backward`,
`GET /api/kernel`): each layer's output or gradients as numbers, and its pictures as PNG data URLs."""

from __future__ import annotations

import base64

import numpy as np
from PIL import Image

from nn.layers import BatchNorm2d, Conv2d, Dropout, Layer, MaxPool2d, ReLU
from nn.mnist.explain.atlas import MAP_COLUMNS, absmax, diverging_index, grad_atlas, kernel_atlas, \
    map_atlas, paletted, saliency_rgba, strongest_units, tile_grid
from nn.mnist.explain.trace import BACKWARD_FORMULAS, LAYER_DOCS, LOSS_FORMULA, Gradients, Trace, \
    pair_top, untile_probs
from nn.mnist.pictures import png_bytes
from nn.model import Sequential


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
                        probabilities=np.round(untile_probs(trace, i), 6).tolist())
        elif name == "OuterSum":
            view.update(kind="pairs", scores=np.round(out[0], 4).tolist(), top=pair_top(trace, i, classes))
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
    atlas = tile_grid(rgb.astype(np.uint8), cols, 160)
    strongest = int(np.abs(k).reshape(len(k), -1).sum(axis=1).argmax())
    return {"layer": index, "channel": channel, "weights": np.round(k, 4).tolist(),
            "bias": None if bias is None else round(float(bias[channel]), 4), "strongest": strongest,
            "columns": cols, "picture": data_url(Image.fromarray(atlas, "RGB")),
            "formula": LAYER_DOCS["Conv2d"][0], "doc": LAYER_DOCS["Conv2d"][1]}


# --- the backward view ------------------------------------------------------------------


def _sig(a: np.ndarray, digits: int = 4) -> list:
    """Nested lists of floats to `digits` significant digits: gradients are small, not few."""
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(a).tolist() if a.size else a.tolist()


def _param_views(layer: Layer, grads: dict[str, np.ndarray]) -> list[dict]:
    """A layer's weights' gradients as the backward view shows them."""
    views = []
    for name, g in grads.items():
        view = {"name": name, "shape": list(g.shape), "max": absmax(g)}
        if isinstance(layer, Conv2d) and name == "W":
            w = layer.params["W"]
            view.update(kind="kernels", columns=g.shape[2] if g.shape[2] > 1 else MAP_COLUMNS, weights_max=absmax(w),
                        weights=data_url(paletted(kernel_atlas(w, absmax(w)))),
                        grad=data_url(paletted(kernel_atlas(g, view["max"]))))
        elif g.ndim == 2:  # Linear's W (in, out): a row per output unit, the strongest MATRIX_ROWS
            rows = strongest_units(g)
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
        m = absmax(d)
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
                     "input": data_url(paletted(diverging_index(grad.dinput, absmax(grad.dinput)))),
                     "input_max": absmax(grad.dinput)},
    }
