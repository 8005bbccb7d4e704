"""`nn explain`: the layers view of one image, or with --backward the backward view, as one
Pillow picture: a band per layer, its pictures left to right, wrapped at SHEET_WIDTH."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageDraw

from nn.layers import Conv2d, Untile
from nn.losses import softmax
from nn.mnist.explain.atlas import MATRIX_ROWS, absmax, diverging_index, grad_atlas, kernel_atlas, \
    map_atlas, paletted, saliency_rgba, strongest_units
from nn.mnist.explain.trace import BACKWARD_FORMULAS, LAYER_DOCS, Gradients, Trace, backward, explain, \
    pair_top, untile_probs
from nn.mnist.pictures import _font

SHEET_WIDTH = 1000  # px; rows wrap their pictures to this width
PAD = 10
# Pillow's default font has no glyphs for these: the sheet spells them in ASCII
ASCII = str.maketrans({"→": "->", "×": "x", "·": "*", "Σ": "sum ", "√": "sqrt", "₁": "1", "₂": "2",
                       "γ": "gamma", "β": "beta", "μ": "mu", "σ": "sigma", "²": "^2", "ε": "eps", "−": "-", "ᵀ": "^T", "\u0302": "_hat",
                       "⋆": "*", "±": "+-"})


class LabelError(ValueError):
    """A label that is not one of the model's classes (`nn explain --backward --label`)."""


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
        probs = untile_probs(trace, i)
        return [_bars(p, 200, 70, [str(d) for d in range(len(p))]) for p in probs]
    if name == "OuterSum" and name in LAYER_DOCS:
        proba = softmax(out.astype(np.float64))[0]
        k = int(round(np.sqrt(len(proba))))
        grid = (255 - 255 * np.sqrt(proba.reshape(k, k))).astype(np.uint8) if k * k == len(proba) \
            else (255 - 255 * proba[None]).astype(np.uint8)
        im = Image.fromarray(grid).convert("RGB")
        lines = ["p(ab) of all pairs: first digit down, second across (dark: likely)"]
        for t in pair_top(trace, i, classes):
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
    m = absmax(d)
    pics: list[Image.Image] = []
    if d.ndim == 4:
        scale = 3 if d.shape[3] == 1 else 2 if d.shape[1] <= 14 else 1
        pics += [_zoomed(grad_atlas(t, m), scale) for t in d]
    elif type(layer).__name__ != "Flatten":
        rows = d.reshape(layer.parts, -1) if isinstance(layer, Untile) else d
        pics += [_bars(r, min(SHEET_WIDTH // len(rows) - 2 * PAD, max(200, 2 * rows.shape[1])), 50) for r in rows]
    for name, g in grad.grads[i].items():
        gm = absmax(g)
        if isinstance(layer, Conv2d) and name == "W":
            w = layer.params["W"]
            pics += [_zoomed(kernel_atlas(w, absmax(w)), 4), _zoomed(kernel_atlas(g, gm), 4)]
        elif g.ndim == 2:
            rows = strongest_units(g)
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
            (f" per digit ×{len(d)}" if len(d) > 1 else "") + f"  max {absmax(d):.3g}     " + \
            BACKWARD_FORMULAS[type(layer).__name__]
        if grad.grads[i]:
            caption += "   [then: " + ", ".join(
                f"d{k}" + (" beside W" if k == "W" and isinstance(layer, Conv2d) else
                           f" of {min(MATRIX_ROWS, g.shape[1])} units" if g.ndim == 2 else "")
                for k, g in grad.grads[i].items()) + "]"
        bands.append((caption, _grad_pictures(grad, i)))
    bands.append((f"input (as the network sees it)  ·  dL/d(input), max {absmax(grad.dinput):.3g}",
                  [_inked(image, 4), _zoomed(diverging_index(grad.dinput, absmax(grad.dinput)), 4)]))
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
