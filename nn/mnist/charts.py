"""Charts for `nn lr-find` and `nn tune`, drawn with Pillow: x-y lines or points, and bars.

Kept apart from pictures.py, which the pipeline's stages depend on: a change here reruns no stage.
"""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, ImageDraw

from nn.mnist.pictures import _font


def nice_ticks(lo: float, hi: float, target: int = 5, whole: bool = False
               ) -> list[tuple[float, str]]:
    """(value, label) of ticks a person would draw between lo and hi: the multiples of a step of
    1, 2 or 5 x 10^k that gives about `target` of them (at least 1 with `whole`: trial numbers,
    epochs), labelled with the step's decimals."""
    if not hi > lo:
        return [(lo, f"{lo:g}")]
    raw = (hi - lo) / target
    k = math.floor(math.log10(raw))
    step = min((m * 10.0 ** k for m in (1, 2, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    if whole:
        step = max(step, 1.0)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    for i in range(first, math.floor(hi / step + 1e-9) + 1):
        value = round(i * step, decimals)
        ticks.append((value, f"{value:.{decimals}f}"))
    return ticks


def log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """(value, label) of the ticks of a log axis from lo to hi (> 0): every power of ten in the
    range, and 2 and 5 times them where the range spans fewer than three decades."""
    mantissas = (1,) if math.log10(hi / lo) >= 3 else (1, 2, 5)
    ticks = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in mantissas:
            value = m * 10.0 ** k
            if lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9):
                ticks.append((value, f"{value:.0e}" if not -2 <= k <= 3 else f"{value:g}"))
    return ticks


def xy_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, title: str,
             x_label: str, y_label: str, log_x: bool = False, lines: bool | Sequence[bool] = True,
             mark_x: float | None = None, size: tuple[int, int] = (640, 400)) -> Image.Image:
    """A chart of (name, xs, ys) series: lines or points (`lines`: for all, or one per series),
    an optional log x-axis, and an optional dashed vertical marker at `mark_x`. Non-finite
    points are left out."""
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
               (0, 0, 0), (128, 0, 0)]
    font, small = _font(14), _font(11)
    w, h = size
    left, top, right, bottom = 64, max(50, 20 + 14 * len(series)), 16, 48  # the names above the plot
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
    whole = not log_x and all(float(x).is_integer() for _, xs, _ in series for x in xs)
    xticks = log_ticks(10 ** x0, 10 ** x1) if log_x else nice_ticks(x0, x1, whole=whole)
    for value, label in xticks:
        tx, _ = px(fx(value), y0)
        d.line((tx, h - bottom, tx, h - bottom + 4), fill="black")
        d.text((tx - 18, h - bottom + 6), label, fill="black", font=small)
    for value, label in nice_ticks(y0, y1):
        _, ty = px(x0, value)
        d.line((left - 4, ty, left, ty), fill="black")
        d.text((4, ty - 6), label, fill="black", font=small)
    if mark_x is not None and (mark_x > 0 or not log_x):
        mx, _ = px(fx(mark_x), y0)
        for yy in range(top, h - bottom, 8):
            d.line((mx, yy, mx, min(yy + 4, h - bottom)), fill=(100, 100, 100))
    as_lines = [lines] * len(series) if isinstance(lines, bool) else list(lines)
    for k, ((name, _, _), s) in enumerate(zip(series, pts)):
        c = colours[k % len(colours)]
        xy = [px(x, y) for x, y in s]
        if as_lines[k] and len(xy) > 1:
            d.line(xy, fill=c, width=2)
        elif not as_lines[k]:
            for x, y in xy:
                d.ellipse((x - 3, y - 3, x + 3, y + 3), outline=c, fill=c)
        d.text((w - right - 160, 8 + 14 * k), name, fill=c, font=small)  # in the top margin
    return img


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, x_label: str,
              size: tuple[int, int] = (640, 300)) -> Image.Image:
    """Horizontal bars, one per (name, value >= 0), top to bottom in the order given."""
    font, small = _font(14), _font(11)
    w, h = size
    left, top, right, bottom = 200, 40, 60, 40
    high = max((v for _, v in bars), default=0.0) or 1.0
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.text((8, 8), title, fill="black", font=font)
    d.text(((w - left) // 2 + left // 2, h - 18), x_label, fill="black", font=small)
    row = (h - top - bottom) / max(len(bars), 1)
    for i, (name, value) in enumerate(bars):
        y = top + i * row
        length = value / high * (w - left - right)
        d.rectangle((left, y + row * 0.15, left + length, y + row * 0.85), fill=(31, 119, 180))
        d.text((8, y + row / 2 - 6), name[-30:], fill="black", font=small)
        d.text((left + length + 4, y + row / 2 - 6), f"{value:.3f}", fill="black", font=small)
    d.line((left, top, left, h - bottom), fill="black")
    return img
