"""MNIST-style preprocessing of any image of a handwritten digit or two-digit number.

MNIST digits were size-normalized to fit a 20x20 box (aspect ratio kept, anti-aliased)
and placed in a 28x28 field by their centre of mass, light ink on black. A model trained
on them only works on a user's image that has been made to look the same; this module
does that:

    read_gray(source)      -> (H, W) float32 luminance in [0, 1]
    ink_map(gray)          -> (H, W) float32 ink in [0, 1], background 0
    normalize_digit(ink)   -> (28, 28) uint8, as MNIST
    split_digits(ink)      -> (left ink, right ink)
    preprocess(source, width) -> (28, width) uint8; width 28 = one digit, 56 = two digits
    preprocess_explained(source, width) -> the same and a Diagnostics: where the digits
                              were found, how they were split, whether the ink touches the edge

MNIST-100 images are two such 28x28 digits side by side, so each digit of a two-digit
image is normalized into its own half.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import IO, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # refuse larger images before decoding them
WORKING_PIXELS = 4_000_000  # larger images are box-reduced to about this size before any work
SIZE = 28  # side of one MNIST digit
BOX = 20  # the digit's bounding box is scaled to fit BOX x BOX
CENTRE = 14.0  # where the centre of mass lands, in pixel-index coordinates (row, column)
MIN_CONTRAST = 0.15  # ink must differ from the background by this much (0..1) to exist
NOISE_FLOOR = 0.1  # ink below this fraction of the full contrast is background texture
INK_THRESHOLD = 0.25  # pixels this inked count for the bounding box and the digit split
MIN_SIDE_INK = 0.1  # a split of two digits must leave each side this share of the ink
MIN_COMPONENT = 0.02  # a connected region with less of the ink is a speck
LABEL_SIDE = 128  # connected regions are found on the ink pooled to at most this size
MAX_ASPECT = 10  # a longer side more than this many times the shorter gets a warning
MIN_INK_PIXELS = 10  # fewer inked pixels than this is a speck, not a digit: a warning

Source = str | os.PathLike | IO[bytes] | Image.Image


Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels, x1 and y1 exclusive


@dataclass(frozen=True)
class Diagnostics:
    """How `preprocess` read an image: what a person needs to see why a prediction went wrong.

    Boxes are in the pixels of `size`, the image as read (a huge photo is box-reduced first).
    """

    size: tuple[int, int]  # (width, height)
    boxes: list[Box]  # the ink's bounding box of each digit, left to right
    split: Literal["gap", "components", "halves"] | None  # how two digits were separated
    touches_edge: bool  # the ink reaches the image's border: part of a digit may be cut off


class ImageError(ValueError):
    """An image that cannot be turned into network input; the message is one line."""


class NotAnImageError(ImageError):
    """The file is not an image Pillow can read, or it is truncated or corrupt."""


class ImageTooLargeError(ImageError):
    """The image has more than MAX_PIXELS pixels (checked from the header)."""


class BlankImageError(ImageError):
    """The image has no ink: it is uniform, or its contrast is below MIN_CONTRAST."""


def open_image(source: str | os.PathLike | IO[bytes], notes: list[str] | None = None
               ) -> Image.Image:
    """Open and decode an image (its first frame), refusing huge ones before decoding.

    An animated or multi-page image is read from its first frame, and `notes` (when given)
    says so. A missing file raises FileNotFoundError (an OSError), as open() does.
    """
    with warnings.catch_warnings():
        # Pillow warns between its own limit and twice it, then raises; both are "too large".
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data" and the like
        try:
            im = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            # Pillow's own limit is higher than ours: quote ours, with the size it read
            size = re.search(r"\((\d+) pixels\)", str(e))
            pixels = f"{int(size[1]) / 1e6:.1f} megapixels" if size else "too many pixels"
            raise ImageTooLargeError(f"image too large: {pixels} "
                                     f"(limit {MAX_PIXELS / 1e6:g})") from None
        except UnidentifiedImageError:
            raise NotAnImageError("not an image (unknown or unsupported format)") from None
        except OSError as e:
            if e.errno is not None:
                raise  # a missing file, a folder, no permission: the caller names them
            raise NotAnImageError(f"not a readable image ({e})") from None
        except Exception as e:  # Pillow's parsers raise many kinds on a crafted file
            raise NotAnImageError(f"not a readable image ({e or type(e).__name__})") from None
        width, height = im.size
        if width * height > MAX_PIXELS:
            im.close()
            raise ImageTooLargeError(
                f"image too large: {width}x{height} is {width * height / 1e6:.1f} megapixels "
                f"(limit {MAX_PIXELS / 1e6:g})"
            )
        if width == 0 or height == 0:
            im.close()
            raise NotAnImageError(f"empty image ({width}x{height})")
        try:
            frames = getattr(im, "n_frames", 1)  # TIFF walks its pages here, and may fail
            if frames > 1 and notes is not None:
                notes.append(f"{frames} frames: only the first one is read")
            im.seek(0)
            im.load()
            return ImageOps.exif_transpose(im)  # phone photos store their rotation in EXIF
        except Exception as e:  # any decoder failure: OSError, SyntaxError, TypeError, ...
            raise NotAnImageError(f"corrupt or truncated image ({e or type(e).__name__})") from None
        finally:
            im.close()


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow's convert("L"). rgb: (H, W, 3) in [0, 1] -> (H, W)."""
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_gray(im: Image.Image) -> np.ndarray:
    """Grayscale luminance of any Pillow image, transparency composited. -> (H, W) float32 in [0, 1].

    Transparent pixels become background: over white if the visible content is dark ink,
    over black if it is light ink, and over the paper's own colour when the opaque part
    is mostly paper.
    """
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    pixels = im.width * im.height
    if pixels > WORKING_PIXELS and im.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        # a digit ends up 20 pixels high: box-average a huge photo first, to spare memory and time
        im = im.reduce(math.ceil(math.sqrt(pixels / WORKING_PIXELS)))
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if im.mode in ("LA", "La", "PA", "RGBa") or (im.mode == "RGB" and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode != "RGBA":
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0

    a = np.asarray(im, dtype=np.float32) / 255.0
    lum, alpha = _luminance(a[..., :3]), a[..., 3]
    if alpha.min() >= 1.0:
        return lum
    opaque = alpha > 0.5
    if opaque.mean() > 0.5:  # mostly opaque: the opaque part holds the paper
        background = float(np.median(lum[opaque]))
    elif alpha.sum() > 0:  # mostly transparent: the opaque part is the ink
        ink_level = float((lum * alpha).sum() / alpha.sum())
        background = 1.0 if ink_level < 0.5 else 0.0
    else:
        background = 0.0  # fully transparent: blank, as ink_map will say
    return lum * alpha + background * (1.0 - alpha)


def read_gray(source: Source, notes: list[str] | None = None) -> np.ndarray:
    """Read any Pillow-readable image as grayscale. -> (H, W) float32 in [0, 1]."""
    im = source if isinstance(source, Image.Image) else open_image(source, notes)
    try:
        return to_gray(im)
    except ValueError as e:  # Pillow cannot convert this mode (e.g. "HSV") to grayscale
        raise NotAnImageError(f"unsupported image mode {im.mode} ({e})") from None


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Light-on-dark ink from a grayscale image of either polarity. gray: (H, W) in [0, 1].

    The background is the median of the image's border (a digit rarely fills it): a light
    border means dark ink on light paper, which is inverted. The background level maps to
    0 and the strongest ink to 1, so a grey photo of paper looks like MNIST's black field.
    """
    h, w = gray.shape
    m = max(1, min(h, w) // 50)  # a thin frame: a wider one would reach into small images' ink
    border = np.concatenate([gray[:m].ravel(), gray[-m:].ravel(), gray[:, :m].ravel(), gray[:, -m:].ravel()])
    background = float(np.median(border))
    ink = gray - background if background < 0.5 else background - gray
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        if peak < 1e-3:
            raise BlankImageError("blank image: no ink found")
        raise BlankImageError(f"blank image: contrast {peak:.2f} is too faint to hold a digit")
    ink = (ink / peak - NOISE_FLOOR) / (1.0 - NOISE_FLOOR)
    return np.clip(ink, 0.0, 1.0, out=ink).astype(np.float32, copy=False)


def _ink_box(ink: np.ndarray) -> tuple[slice, slice] | None:
    """Rows and columns of the bounding box of pixels above INK_THRESHOLD, or None."""
    mask = ink > INK_THRESHOLD
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def normalize_digit(ink: np.ndarray) -> np.ndarray:
    """One digit as MNIST made it. ink: (H, W) in [0, 1], light on dark -> (28, 28) uint8.

    Crop to the ink's bounding box, scale (anti-aliased, aspect kept) so the longer side
    is BOX pixels, and paste into a 28x28 field with the centre of mass at CENTRE.
    """
    box = _ink_box(ink)
    if box is None:
        raise BlankImageError("blank image: no ink found")
    crop = ink[box]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow's (width, height)
    patch = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), mode="F")
    patch = np.asarray(patch.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    patch = np.clip(patch, 0.0, 1.0)  # Lanczos overshoots a little at edges

    ph, pw = patch.shape
    mass = patch.sum()
    cy = (patch.sum(axis=1) @ np.arange(ph)) / mass
    cx = (patch.sum(axis=0) @ np.arange(pw)) / mass
    top = min(max(round(CENTRE - cy), 0), SIZE - ph)
    left = min(max(round(CENTRE - cx), 0), SIZE - pw)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + ph, left : left + pw] = patch
    return np.rint(out * 255.0).astype(np.uint8)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean mask. -> (labels (h, w) int, -1 off the mask; count).

    Min-label propagation with pointer jumping: each pass takes the smallest label among a
    pixel's neighbours, then follows labels to their own labels, so it converges in a few
    dozen vectorised passes instead of one pass per pixel of a stroke.
    """
    h, w = mask.shape
    off = h * w  # label of background pixels, larger than any pixel index
    lab = np.where(mask, np.arange(off).reshape(h, w), off)
    pad = np.full((h + 2, w + 2), off)
    while True:
        pad[1:-1, 1:-1] = lab
        low = lab.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(low, pad[dy : dy + h, dx : dx + w], out=low)
        low[~mask] = off
        flat = low.ravel()
        on = flat < off
        for _ in range(4):  # labels are pixel indices of the same component: jump along them
            flat[on] = flat[flat[on]]
        if np.array_equal(low, lab):
            break
        lab = low
    roots, inverse = np.unique(lab[mask], return_inverse=True)
    out = np.full((h, w), -1)
    out[mask] = inverse
    return out, roots.size


def _split_by_components(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Group the ink's connected regions into a left and a right digit, or None if that fails.

    Regions are found on a max-pooled copy (at most LABEL_SIDE pixels a side), specks
    (< MIN_COMPONENT of the ink) are dropped, and the regions, ordered by their centre,
    are cut where the two groups' columns are most compact (1-D two-means): so the two
    strokes of a "4" stay together, and a 7 whose bar overhangs a 1 is still told apart.
    """
    h, w = ink.shape
    f = -(-max(h, w) // LABEL_SIDE)  # pooling factor, rounded up
    padded = np.zeros((-(-h // f) * f, -(-w // f) * f), np.float32)
    padded[:h, :w] = ink
    blocks = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f)
    labels, n = _components(blocks.max(axis=(1, 3)) > INK_THRESHOLD)
    if n < 2:
        return None
    mass_map = blocks.sum(axis=(1, 3))
    x = np.arange(labels.shape[1], dtype=np.float64)
    stats = []  # (centre x, mass, sum of m*x, sum of m*x^2, label) of each component
    for i in range(n):
        cols = np.where(labels == i, mass_map, 0.0).sum(axis=0)
        m = cols.sum()
        stats.append((cols @ x / m, m, cols @ x, cols @ (x * x), i))
    total = sum(s[1] for s in stats)
    stats = sorted(s for s in stats if s[1] >= MIN_COMPONENT * total)
    best = None  # (cost, k): the first k components form the left digit
    for k in range(1, len(stats)):
        cost = 0.0
        for group in (stats[:k], stats[k:]):
            m, mx, mxx = (sum(s[j] for s in group) for j in (1, 2, 3))
            cost += mxx - mx * mx / m  # the group's mass-weighted variance of column, times mass
        left_share = sum(s[1] for s in stats[:k]) / total
        if min(left_share, 1.0 - left_share) >= MIN_SIDE_INK and (best is None or cost < best[0]):
            best = (cost, k)
    if best is None:
        return None
    block_label = np.repeat(np.repeat(labels, f, axis=0), f, axis=1)[:h, :w]  # back to full size
    k = best[1]
    left = np.isin(block_label, [s[4] for s in stats[:k]])
    right = np.isin(block_label, [s[4] for s in stats[k:]])
    return ink * left, ink * right


Piece = tuple[np.ndarray, tuple[int, int]]  # a digit's ink and the (row, column) of its corner


def _split(ink: np.ndarray) -> tuple[Piece, Piece, Literal["gap", "components", "halves"]]:
    """split_digits, with where each side lies in `ink` and which rule split it."""
    box = _ink_box(ink)
    if box is None:
        raise BlankImageError("blank image: no ink found")
    x0 = box[1].start
    cols = ink[:, box[1]]
    profile = cols.sum(axis=0)  # (w,) ink per column
    inked = (cols > INK_THRESHOLD).any(axis=0)
    share = np.cumsum(profile) / profile.sum()  # share of the ink up to and including each column

    best = None  # (width, start, end) of the chosen gap
    edges = np.flatnonzero(np.diff(inked.astype(np.int8)))  # last column before each change
    for start, end in zip(edges[0::2] + 1, edges[1::2] + 1):  # runs of empty columns [start, end)
        left_share = share[start - 1]
        if min(left_share, 1.0 - left_share) >= MIN_SIDE_INK and (best is None or end - start > best[0]):
            best = (end - start, start, end)
    if best is not None:
        _, start, end = best
        return (cols[:, :start], (0, x0)), (cols[:, end:], (0, x0 + end)), "gap"
    grouped = _split_by_components(ink[box])
    if grouped is not None:
        corner = (box[0].start, x0)
        return (grouped[0], corner), (grouped[1], corner), "components"
    half = max(1, cols.shape[1] // 2)
    return (cols[:, :half], (0, x0)), (cols[:, half:], (0, x0 + half)), "halves"


def split_digits(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a two-digit image into its left and right digit. ink: (H, W) -> two (H, w_i).

    In order of preference: the widest run of empty columns that leaves at least
    MIN_SIDE_INK of the ink on each side (a stray speck is not a digit); else the ink's
    connected regions grouped into left and right (digits that overlap in columns);
    else, for digits that touch, the two halves of the ink's bounding box.
    """
    (left, _), (right, _), _ = _split(ink)
    return left, right


def _box_of(piece: Piece) -> Box:
    ink, (row, col) = piece
    box = _ink_box(ink)
    if box is None:
        raise BlankImageError("blank image: no ink found")
    return (int(col + box[1].start), int(row + box[0].start), int(col + box[1].stop), int(row + box[0].stop))


def degenerate(ink: np.ndarray) -> str | None:
    """Why an image's answer deserves doubt (an extreme aspect ratio, a speck of ink), or None."""
    h, w = ink.shape
    if max(h, w) > MAX_ASPECT * min(h, w):
        return f"extreme aspect ratio ({w}x{h}): the digit is squeezed to fit"
    inked = int((ink > INK_THRESHOLD).sum())
    if inked < MIN_INK_PIXELS:
        return f"only {inked} inked pixel(s): a speck, not a digit"
    return None


def preprocess(source: Source, width: int = SIZE, notes: list[str] | None = None) -> np.ndarray:
    """An image file as the network's input. -> (28, width) uint8, light ink on black.

    width 28 treats the image as one digit; 56 as a two-digit number (MNIST-100), each
    digit normalized into its own 28x28 half. A degenerate image (see `degenerate`) is
    still processed; the reason is appended to `notes` when given.
    Raises NotAnImageError, ImageTooLargeError, BlankImageError (all ImageError) and,
    for a missing file, FileNotFoundError.
    """
    return preprocess_explained(source, width, notes)[0]


def preprocess_explained(source: Source, width: int = SIZE, notes: list[str] | None = None
                         ) -> tuple[np.ndarray, Diagnostics]:
    """preprocess, and how it read the image. -> ((28, width) uint8, Diagnostics)."""
    if width not in (SIZE, 2 * SIZE):
        raise ValueError(f"width must be {SIZE} (one digit) or {2 * SIZE} (two digits), not {width}")
    ink = ink_map(read_gray(source, notes))
    doubt = degenerate(ink)
    if doubt and notes is not None:
        notes.append(doubt)
    h, w = ink.shape
    if width == SIZE:
        pieces, split = [(ink, (0, 0))], None
    else:
        left, right, split = _split(ink)
        pieces = [left, right]
    boxes = [_box_of(p) for p in pieces]
    x = np.concatenate([normalize_digit(p[0]) for p in pieces], axis=1)
    touches_edge = any(x0 == 0 or y0 == 0 or x1 == w or y1 == h for x0, y0, x1, y1 in boxes)
    return x, Diagnostics(size=(w, h), boxes=boxes, split=split, touches_edge=touches_edge)
