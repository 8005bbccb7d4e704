"""Charts for `nn lr-find` and `nn tune`, drawn with Pillow.

Kept apart from pictures.py, which the pipeline's stages depend on: a change here reruns no stage.
"""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, ImageDraw

from nn.mnist.pictures import _font


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
