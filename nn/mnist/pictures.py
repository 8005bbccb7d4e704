"""Pictures for reports, drawn with Pillow: labelled grids of images."""

from __future__ import annotations

import io
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
