"""MNIST-style preprocessing (nn/preprocess.py) on digits drawn with Pillow."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import png_header
from nn.mnist.preprocess import (
    BlankImageError,
    ImageTooLargeError,
    NotAnImageError,
    normalize_digit,
    preprocess,
    split_digits,
)

# Digits as strokes in a unit box (x right, y down), so no font is needed.
STROKES = {
    "1": [[(0.55, 0.0), (0.55, 1.0)], [(0.3, 0.2), (0.55, 0.0)]],
    "4": [[(0.7, 1.0), (0.7, 0.0), (0.0, 0.7), (1.0, 0.7)]],
    "7": [[(0.0, 0.0), (1.0, 0.0), (0.35, 1.0)]],
}


def draw(digits: str, size=(173, 131), box=(30, 20, 70, 100), gap=25, ink=0, paper=255, width=9, mode="L"):
    """Draw `digits` left to right, each in a box of box[2] x box[3] starting at (box[0], box[1])."""
    im = Image.new("L", size, paper)
    d = ImageDraw.Draw(im)
    x0, y0, w, h = box
    for ch in digits:
        if ch == "0":
            d.ellipse([x0, y0, x0 + w, y0 + h], outline=ink, width=width)
        else:
            for stroke in STROKES[ch]:
                d.line([(x0 + u * w, y0 + v * h) for u, v in stroke], fill=ink, width=width, joint="curve")
        x0 += w + gap
    return im.convert(mode)


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    a = a.astype(np.float64) / a.sum()
    return a.sum(axis=1) @ np.arange(a.shape[0]), a.sum(axis=0) @ np.arange(a.shape[1])


def bbox(a: np.ndarray, level: int = 64) -> tuple[int, int]:
    rows, cols = np.flatnonzero((a > level).any(axis=1)), np.flatnonzero((a > level).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def png_bytes(im: Image.Image, fmt="PNG", **kw) -> io.BytesIO:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    buf.seek(0)
    return buf


def assert_mnist_like(a: np.ndarray):
    """28x28 uint8, light ink on a black field, 20x20 box, centre of mass at (14, 14)."""
    assert a.shape == (28, 28) and a.dtype == np.uint8
    assert a.max() >= 200  # strokes at (nearly) full intensity
    frame = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    assert (frame > 0).mean() < 0.1  # black border (a top-heavy 7 may reach the bottom, as in MNIST)
    assert (a == 0).mean() > 0.6  # mostly background, as MNIST (~80% zeros)
    h, w = bbox(a)
    assert max(h, w) in (19, 20, 21) and min(h, w) <= 21
    cy, cx = centre_of_mass(a)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


@pytest.mark.parametrize("digit", ["0", "1", "4", "7"])
@pytest.mark.parametrize(
    "size,box", [((173, 131), (30, 20, 70, 100)), ((61, 397), (3, 250, 40, 90)), ((999, 77), (800, 5, 30, 60))]
)
def test_drawn_digit_comes_out_like_mnist(digit, size, box):
    # black on white, odd sizes, digit off-centre
    a = preprocess(draw(digit, size=size, box=box), 28)
    assert_mnist_like(a)


def test_polarity_is_detected():
    dark_on_light = preprocess(draw("7"), 28)
    light_on_dark = preprocess(draw("7", ink=255, paper=0), 28)
    grey_photo = preprocess(draw("7", ink=60, paper=190), 28)  # low contrast, grey paper
    assert np.array_equal(dark_on_light, light_on_dark)
    assert np.abs(grey_photo.astype(int) - dark_on_light).mean() < 3


def test_aspect_ratio_kept_for_a_thin_one():
    a = preprocess(draw("1", box=(40, 10, 10, 110), width=5), 28)
    h, w = bbox(a)
    assert h == 20 and w < 10  # tall and thin, not stretched into a square


def test_a_big_photo_is_reduced_first_and_still_comes_out_like_mnist():
    im = draw("4", size=(3001, 1999), box=(1200, 300, 700, 1000), width=90, mode="RGB")  # 6 MP, 10x
    a = preprocess(png_bytes(im, "JPEG", quality=90), 28)
    assert_mnist_like(a)
    small = preprocess(draw("4"), 28)  # the same drawing at a tenth of the size
    assert np.abs(a.astype(int) - small).mean() < 6


@pytest.mark.parametrize("ink_rgb", [(0, 0, 0), (255, 255, 255), (20, 40, 200)])
def test_rgba_with_transparent_background(ink_rgb):
    # the transparent pixels' own colour is black, the worst case for ignoring alpha
    reference = preprocess(draw("4"), 28)
    mask = draw("4", ink=255, paper=0)
    rgba = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", mask.size, (*ink_rgb, 255)), mask=mask)
    a = preprocess(png_bytes(rgba), 28)
    assert np.abs(a.astype(int) - reference).mean() < 2


def test_rgba_opaque_paper_with_transparent_margin():
    reference = preprocess(draw("7"), 28)
    rgba = draw("7", mode="RGB").convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    ImageDraw.Draw(alpha).rectangle([0, 0, rgba.width - 1, 8], fill=0)  # a transparent strip on top
    rgba.putalpha(alpha)
    assert np.abs(preprocess(rgba, 28).astype(int) - reference).mean() < 2


def test_jpeg_rgb_and_other_modes_agree_with_png():
    im = draw("4", mode="RGB")
    reference = preprocess(png_bytes(im), 28)
    jpeg = preprocess(png_bytes(im, "JPEG", quality=70), 28)
    assert_mnist_like(jpeg)
    assert np.abs(jpeg.astype(int) - reference).mean() < 4
    gray = draw("4")
    for variant in (gray.convert("P"), gray.convert("1"), gray.convert("I;16"), gray.convert("LA")):
        a = preprocess(png_bytes(variant), 28)
        assert np.abs(a.astype(int) - reference).mean() < 4, variant.mode


def test_two_digits_with_a_gap_match_each_digit_alone():
    both = preprocess(draw("47"), 56)
    assert both.shape == (28, 56) and both.dtype == np.uint8
    left = preprocess(draw("4"), 28)
    right = preprocess(draw("7", box=(30 + 70 + 25, 20, 70, 100)), 28)
    assert np.array_equal(both[:, :28], left)
    assert np.array_equal(both[:, 28:], right)


@pytest.mark.parametrize("one_x", [96, 130])
def test_digits_overlapping_in_columns_are_told_apart_by_their_regions(one_x):
    # the 7's bar overhangs the 1 (one_x=96): no empty column, but two separate regions
    im = draw("7", box=(20, 20, 80, 100))
    ImageDraw.Draw(im).line([(one_x, 50), (one_x, 120)], fill=0, width=9)
    seven_alone = preprocess(draw("7", box=(20, 20, 80, 100)), 28)
    a = preprocess(im, 56)
    assert np.abs(a[:, :28].astype(int) - seven_alone).mean() < 2
    assert_mnist_like(a[:, 28:])
    h, w = bbox(a[:, 28:])
    assert h == 20 and w < 8  # the 1 alone, without a piece of the bar


def test_a_digit_in_two_strokes_stays_together():
    # a "4" as two strokes that do not touch, and a "1" with a long flag reaching over the 4's
    # bar: no empty column, three regions, grouped {L, upright} | {1}
    ink = np.zeros((100, 200), np.float32)
    ink[20:64, 20:24] = 1.0  # the 4's L: down ...
    ink[60:64, 20:60] = 1.0  # ... and across
    ink[10:56, 45:49] = 1.0  # the 4's upright, above the bar without touching it
    ink[20:80, 80:84] = 1.0  # the 1
    ink[20:22, 58:82] = 1.0  # its flag
    left, right = split_digits(ink)
    assert left.shape == right.shape  # regions are masked, not cut by columns
    assert left.sum() == 44 * 4 + 40 * 4 - 16 + 46 * 4  # L + bar + upright
    assert right.sum() == 60 * 4 + 24 * 2 - 4  # 1 + flag


def test_touching_digits_are_split_near_the_middle():
    im = draw("00", gap=-6)  # two rings overlapping by a few pixels: one region, split in halves
    a = preprocess(im, 56)
    for half in (a[:, :28], a[:, 28:]):
        cy, cx = centre_of_mass(half)
        assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert np.abs(a[:, :28].astype(int) - a[:, 28:]).mean() < 16  # the same ring twice, give or take the cut


def test_a_speck_is_not_taken_for_a_digit():
    ink = np.zeros((100, 200), np.float32)
    ink[20:80, 40:50] = 1.0  # a "1"
    ink[20:80, 110:160] = 1.0  # a block
    ink[50, 195] = 1.0  # a speck far right: the widest gap, but almost no ink beyond it
    left, right = split_digits(ink)
    assert left.shape[1] == 10 and right[20:80, :50].all()


def test_normalize_digit_centres_by_mass_not_by_box():
    ink = np.zeros((40, 20), np.float32)
    ink[:, 0:4] = 1.0  # a "Γ": heavy upright on the left, bar along the top
    ink[0:3, :] = 1.0
    a = normalize_digit(ink)
    cy, cx = centre_of_mass(a)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    assert (rows[0] + rows[-1]) / 2 > 15 and (cols[0] + cols[-1]) / 2 > 15  # the box is off-centre


def test_not_an_image():
    with pytest.raises(NotAnImageError, match="not an image"):
        preprocess(io.BytesIO(b"hello, this is text\n" * 10))


def test_truncated_image():
    data = png_bytes(draw("7")).getvalue()
    with pytest.raises(NotAnImageError, match="truncated"):
        preprocess(io.BytesIO(data[: len(data) // 2]))


@pytest.mark.parametrize(
    "im", [Image.new("L", (50, 40), 255), Image.new("RGB", (9, 9), (0, 0, 0)), Image.new("RGBA", (30, 30), (0, 0, 0, 0))]
)
def test_blank_image(im):
    with pytest.raises(BlankImageError, match="blank image"):
        preprocess(png_bytes(im))


def test_faint_noise_is_blank():
    rng = np.random.default_rng(0)
    paper = (235 + rng.integers(-8, 9, size=(64, 64))).astype(np.uint8)
    with pytest.raises(BlankImageError, match="faint"):
        preprocess(Image.fromarray(paper))


@pytest.mark.parametrize("width,height", [(8000, 7000), (10000, 10000), (30000, 30000)])
def test_too_large_is_refused_from_the_header(width, height):
    # 56 MP is over our limit; 100 MP also trips Pillow's bomb warning, 900 MP its bomb error
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning leaks out
        with pytest.raises(ImageTooLargeError, match="too large"):
            preprocess(io.BytesIO(png_header(width, height)))


def test_missing_file_and_bad_width(tmp_path):
    with pytest.raises(FileNotFoundError):
        preprocess(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="width"):
        preprocess(draw("7"), 30)
