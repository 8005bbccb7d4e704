"""Pictures for reports, drawn with Pillow: labelled grids of images."""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG (deterministic: no timestamps)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def labelled_grid(images: np.ndarray, captions: Sequence[str], columns: int, scale: int = 2,
                  caption_height: int = 14, pad: int = 8) -> Image.Image:
    """Tile (N, H, W) uint8 images (light on dark) with a caption under each, white background."""
    n, h, w = images.shape
    rows = -(-n // columns)
    cell_w, cell_h = w * scale + pad, h * scale + caption_height + pad
    sheet = Image.new("L", (columns * cell_w + pad, rows * cell_h + pad), 255)
    draw = ImageDraw.Draw(sheet)
    for i, (img, caption) in enumerate(zip(images, captions)):
        r, c = divmod(i, columns)
        x, y = pad + c * cell_w, pad + r * cell_h
        tile = Image.fromarray(255 - img).resize((w * scale, h * scale), Image.NEAREST)
        sheet.paste(tile, (x, y))
        draw.rectangle((x - 1, y - 1, x + w * scale, y + h * scale), outline=170)
        draw.text((x + 2, y + h * scale + 1), caption, fill=0)
    return sheet


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _heat(value: float, hue: tuple[int, int, int]) -> tuple[int, int, int]:
    """White (0) to `hue` (1)."""
    return tuple(int(round(255 + (c - 255) * value)) for c in hue)


def confusion_heatmap(cm: np.ndarray, classes: Sequence[str], title: str) -> Image.Image:
    """Confusion matrix picture: rows actual, columns predicted, rates normalized per row.

    Correct predictions are blue, mistakes red; a mistake's colour grows with the square root
    of its rate so that rare confusions stay visible next to a ~99 % diagonal.
    """
    k = len(classes)
    cell = 40 if k <= 20 else 7
    tick_every = 1 if k <= 20 else 10
    font, small = _font(14), _font(11 if k <= 20 else 10)
    left, top, right, bottom = 70, 60, 20, 30
    size = k * cell
    img = Image.new("RGB", (left + size + right, top + size + bottom), "white")
    draw = ImageDraw.Draw(img)
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    for i in range(k):
        for j in range(k):
            if i == j:
                colour = _heat(rate[i, j], (30, 80, 200))
            else:
                colour = _heat(min(1.0, np.sqrt(rate[i, j] * 10)), (210, 30, 30))
            x, y = left + j * cell, top + i * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour)
            if k <= 20 and cm[i, j]:
                text = str(cm[i, j])
                draw.text((x + cell / 2, y + cell / 2), text, anchor="mm", font=small,
                          fill="white" if i == j and rate[i, j] > 0.5 else "black")
    draw.rectangle((left - 1, top - 1, left + size, top + size), outline=(120, 120, 120))
    for t in range(0, k, tick_every):
        c = (t + 0.5 * (tick_every if k <= 20 else 1)) * cell
        draw.text((left + c, top - 4), classes[t], anchor="md", font=small, fill="black")
        draw.text((left - 6, top + c), classes[t], anchor="rm", font=small, fill="black")
    draw.text((left + size / 2, 8), title, anchor="mt", font=font, fill="black")
    draw.text((left + size / 2, top - 22), "predicted", anchor="md", font=font, fill="black")
    draw.text((left + size / 2, top + size + 8), "blue: correct (row %)  red: confused",
              anchor="mt", font=small, fill=(90, 90, 90))
    label = Image.new("RGB", (80, 20), "white")
    ImageDraw.Draw(label).text((40, 10), "actual", anchor="mm", font=font, fill="black")
    img.paste(label.rotate(90, expand=True), (4, top + size // 2 - 40))
    return img


def error_gallery(images: np.ndarray, actual: Sequence[str], predicted: Sequence[str],
                  confidence: Sequence[float], columns: int = 8) -> Image.Image:
    """Mistakes tiled with 'true as predicted (probability)' under each; images (N, H, W) uint8."""
    captions = [f"{a} as {p} ({c:.0%})" for a, p, c in zip(actual, predicted, confidence)]
    return labelled_grid(images, captions, columns=columns, scale=3, caption_height=16)


def xy_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, title: str,
             x_label: str, y_label: str, log_x: bool = False, lines: bool = True,
             mark_x: float | None = None, size: tuple[int, int] = (640, 400)) -> Image.Image:
    """A chart of (name, xs, ys) series: lines or points, an optional log x-axis, and an
    optional dashed vertical marker at `mark_x`. Non-finite points are left out."""
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    font, small = _font(14), _font(11)
    w, h = size
    left, top, right, bottom = 64, 50, 16, 48
    fx = (lambda v: math.log10(v)) if log_x else float
    pts = [[(fx(x), float(y)) for x, y in zip(xs, ys)
            if math.isfinite(y) and (x > 0 or not log_x)] for _, xs, ys in series]
    allx = [p[0] for s in pts for p in s] or [0.0, 1.0]
    ally = [p[1] for s in pts for p in s] or [0.0, 1.0]
    x0, x1 = min(allx), max(allx)
    y0, y1 = min(ally), max(ally)
    x0, x1 = (x0 - 0.5, x1 + 0.5) if x1 == x0 else (x0, x1)
    pad = (y1 - y0) * 0.05 or 0.5
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right),
                h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))

    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.rectangle((left, top, w - right, h - bottom), outline=(120, 120, 120))
    d.text((left, 8), title, fill="black", font=font)
    d.text(((w - left) // 2, h - 18), x_label, fill="black", font=small)
    d.text((4, top - 18), y_label, fill="black", font=small)
    for i in range(5):  # ticks
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        tx, _ = px(xv, y0)
        _, ty = px(x0, yv)
        d.line((tx, h - bottom, tx, h - bottom + 4), fill="black")
        d.text((tx - 18, h - bottom + 6), f"{10 ** xv:.0e}" if log_x else f"{xv:.3g}",
               fill="black", font=small)
        d.line((left - 4, ty, left, ty), fill="black")
        d.text((4, ty - 6), f"{yv:.4g}", fill="black", font=small)
    if mark_x is not None and (mark_x > 0 or not log_x):
        mx, _ = px(fx(mark_x), y0)
        for yy in range(top, h - bottom, 8):
            d.line((mx, yy, mx, min(yy + 4, h - bottom)), fill=(100, 100, 100))
    for k, ((name, _, _), s) in enumerate(zip(series, pts)):
        c = colours[k % len(colours)]
        xy = [px(x, y) for x, y in s]
        if lines and len(xy) > 1:
            d.line(xy, fill=c, width=2)
        elif not lines:
            for x, y in xy:
                d.ellipse((x - 3, y - 3, x + 3, y + 3), outline=c, fill=c)
        d.text((w - right - 160, 8 + 14 * k), name, fill=c, font=small)  # in the top margin
    return img
