"""Pictures for reports, drawn with Pillow: labelled grids of images."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw


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
