"""random_warp: seeded random affine maps and elastic distortions, bilinearly resampled
(random_shift: tests/test_device.py)."""

from pathlib import Path

import numpy as np
import pytest

from nn.augment import (affine_view, draw_maps, elastic_field, gaussian_matrix, random_shift,
                        random_warp, resample, tile_cut, tile_join)


class Fixed:
    """A stand-in Generator whose uniform draws are all `hi` (or `lo`)."""

    def __init__(self, end="hi"):
        self.end = end

    def uniform(self, lo, hi, n):
        return np.full(n, hi if self.end == "hi" else lo)

    def random(self, shape, dtype=np.float64):  # the elastic noise U[-1, 1] is then all +-1
        return np.full(shape, 1 if self.end == "hi" else 0, dtype)


def images(shape=(6, 9, 9, 1), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_no_warp_is_the_input_itself_and_draws_nothing():
    x, rng = images(), np.random.default_rng(3)
    state = rng.bit_generator.state
    assert random_warp(x, rng) is x
    assert rng.bit_generator.state == state  # the stream of every later draw is unchanged


@pytest.mark.parametrize("shape", [(3, 9, 9, 1), (2, 8, 8, 3)])
def test_a_quarter_turn_is_rot90(shape):
    x = images(shape)
    np.testing.assert_allclose(random_warp(x, Fixed(), rotate=90), np.rot90(x, 1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(random_warp(x, Fixed("lo"), rotate=90), np.rot90(x, -1, axes=(1, 2)), atol=1e-5)


def test_scaling_zooms_about_the_centre_and_fills_what_falls_outside():
    x = np.ones((1, 9, 9, 1), np.float32)
    big = random_warp(x, Fixed(), scale=0.5)                 # s = 1.5: every pixel reads inside
    np.testing.assert_allclose(big, x, atol=1e-6)
    small = random_warp(x, Fixed("lo"), scale=0.5, fill=-3)  # s = 0.5: the border reads outside
    assert small[0, 4, 4, 0] == pytest.approx(1) and small[0, 0, 0, 0] == pytest.approx(-3)
    assert small.dtype == np.float32 and small.shape == x.shape


def test_a_shear_moves_rows_by_their_distance_from_the_centre():
    x = np.zeros((1, 7, 7, 1), np.float32)
    x[0, :, 3] = 1                                           # a vertical bar through the centre
    y = random_warp(x, Fixed(), shear=45)                    # tan 45 = 1: row r moves by r - 3
    for r in range(7):
        assert y[0, r, 3 + (r - 3), 0] == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("kw", [dict(rotate=15, scale=0.1, shear=10),
                                dict(rotate=5, elastic=20, elastic_sigma=3)])
def test_a_seed_gives_the_same_warps_and_the_maps_differ_per_image(kw):
    x = np.repeat(images((1, 12, 20, 1)), 4, axis=0)
    a = random_warp(x, np.random.default_rng(7), fill=-0.5, **kw)
    b = random_warp(x, np.random.default_rng(7), fill=-0.5, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.3, 4.0])
def test_the_gaussian_matrix_is_a_normalised_convolution_with_zeros_beyond_the_ends(sigma):
    v = np.random.default_rng(1).standard_normal(40)
    r = int(np.ceil(4 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    np.testing.assert_allclose(gaussian_matrix(40, sigma) @ v,
                               np.convolve(v, kernel / kernel.sum(), mode="same"), atol=1e-12)


def test_a_uniform_elastic_field_is_a_translation_by_alpha():
    x = images((2, 14, 14, 1))
    y = random_warp(x, Fixed(), elastic=2, elastic_sigma=0.5)  # noise +1: field = 2 px inside
    np.testing.assert_allclose(y[:, 2:10, 2:10], x[:, 4:12, 4:12], atol=1e-5)  # reads (r+2, c+2)
    y = random_warp(x, Fixed("lo"), elastic=2, elastic_sigma=0.5)
    np.testing.assert_allclose(y[:, 4:12, 4:12], x[:, 2:10, 2:10], atol=1e-5)


def test_the_elastic_sigma_sets_how_smooth_the_field_is():
    def neighbour_correlation(sigma):
        f = elastic_field(np.random.default_rng(2), 200, 28, 28, alpha=1, sigma=sigma)
        return np.corrcoef(f[..., 10:18, 10:17].ravel(), f[..., 10:18, 11:18].ravel())[0, 1]
    assert neighbour_correlation(0.3) < 0.3 < 0.9 < neighbour_correlation(4)
    f = elastic_field(np.random.default_rng(2), 50, 28, 28, alpha=34, sigma=4)
    assert f.shape == (50, 2, 28, 28) and f.dtype == np.float32
    assert 0.5 < f[..., 8:20, 8:20].std() < 3                       # a pixel or so at Simard's 34, 4


def test_the_elastic_field_moves_pixels_after_the_affine_map():
    x = images((3, 12, 20, 1))
    plain = random_warp(x, np.random.default_rng(5), rotate=5, fill=-0.5)
    assert not np.allclose(random_warp(x, np.random.default_rng(5), rotate=5, elastic=20, fill=-0.5),
                           plain)


def test_the_shift_folded_into_the_warp_is_the_shift_then_the_warp():
    """random_warp(max_shift=s) draws the shifts first, as random_shift does, and moves each
    image by its shift inside the one resampling: the same as random_shift then random_warp on
    the same generator, for images whose border (more than s px) is background, as MNIST's is."""
    x = images((20, 16, 16, 1))
    x[:, :3], x[:, -3:], x[:, :, :3], x[:, :, -3:] = -0.5, -0.5, -0.5, -0.5
    kw = dict(rotate=10, scale=0.1, shear=5, elastic=2, elastic_sigma=2, fill=-0.5)
    folded = random_warp(x, np.random.default_rng(4), max_shift=2, **kw)
    rng = np.random.default_rng(4)
    np.testing.assert_allclose(folded, random_warp(random_shift(x, 2, rng, fill=-0.5), rng, **kw),
                               atol=1e-5)
    assert not np.allclose(folded, random_warp(x, np.random.default_rng(4), **kw), atol=1e-3)
    only = random_warp(x, np.random.default_rng(4), max_shift=2, fill=-0.5)  # no warp: a copy
    np.testing.assert_array_equal(only, random_shift(x, 2, np.random.default_rng(4), fill=-0.5))


@pytest.mark.parametrize("chunk", [1, 9 * 9 * 4, 10 ** 9])
def test_the_cpu_chunks_give_the_same_bytes_as_one_pass(monkeypatch, chunk):
    """On the CPU random_warp resamples a few images at a time (for the cache); every step is
    per pixel, so chunks of 1 image, of 4 (the last one short) or one pass give the same bytes."""
    import nn.augment

    x = images((11, 9, 9, 2))
    kw = dict(rotate=20, scale=0.1, shear=10, elastic=3, elastic_sigma=2, fill=-0.5)
    monkeypatch.setattr(nn.augment, "WARP_CHUNK_PIXELS", chunk)
    chunked = random_warp(x, np.random.default_rng(3), **kw)
    rng = np.random.default_rng(3)  # the same draws, then the pixel work as one pass
    inv, field = nn.augment.draw_maps(rng, x.shape[0], 9, 9, **{k: kw[k] for k in kw if k != "fill"})
    assert np.array_equal(chunked, nn.augment.resample(x, inv, field, -0.5))


def test_a_batch_warped_in_chunks_is_the_same_bytes_as_one_image_at_a_time():
    """random_warp resamples a batch a chunk of images at a time; each image is
    still resampled alone, so the batch equals the images warped one by one, bit for bit."""
    x = np.random.default_rng(3).random((300, 28, 28, 1), dtype=np.float32)  # 10 chunks of 32
    kw = dict(rotate=8, scale=0.08, shear=8, elastic=15, elastic_sigma=4, fill=-0.4)
    batch = random_warp(x, np.random.default_rng(5), **kw)
    inv, field = draw_maps(np.random.default_rng(5), 300, 28, 28, 8, 0.08, 8, 15, 4)
    alone = np.concatenate([resample(x[i:i + 1], inv[i:i + 1], field[i:i + 1], -0.4)
                            for i in range(300)])
    np.testing.assert_array_equal(batch, alone)


def test_augment_tiles_warps_each_digit_as_tiles_cuts_them():
    """`augment_tiles` on a Tiles-first network: the pair's augmentation is the tiles' own,
    each 28x28 digit shifted and warped on its own, put back where nn.layers.Tiles took it."""
    from nn.layers import Tiles
    from nn.mnist.params import read_yaml, validate
    from nn.mnist.training import TrainParams, make_augment

    section = read_yaml(Path(__file__).resolve().parents[1] / "params.yaml")["cnn"]
    tiled = validate(TrainParams, {**section, "augment_tiles": True}, "cnn")
    whole = tiled.model_copy(update={"augment_tiles": False})
    x = np.random.default_rng(2).random((6, 28, 56, 1), dtype=np.float32)
    got = make_augment(tiled, -0.4)(x, np.random.default_rng(5))
    cut = Tiles(2)
    digits = cut.forward(x, training=True)                                   # (12, 28, 28, 1)
    want = cut.backward(make_augment(whole, -0.4)(digits, np.random.default_rng(5)))
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, make_augment(whole, -0.4)(x, np.random.default_rng(5)))


@pytest.mark.parametrize("end, rotate, scale", [("hi", 90, 0.0), ("hi", 7, 0.06), ("lo", 7, 0.06)])
def test_an_affine_view_is_the_warp_with_those_draws(end, rotate, scale):
    """affine_view(x, 0, 0, θ, s) is random_warp's map with the rotation θ and the scale s
    drawn: the test-time views of nn.mnist.modelfile.predict_proba warp as training does."""
    x = images((4, 9, 9, 1))
    sign = 1 if end == "hi" else -1
    want = random_warp(x, Fixed(end), rotate=rotate, scale=scale, fill=-0.3)
    np.testing.assert_allclose(affine_view(x, 0, 0, sign * rotate, 1 + sign * scale, -0.3), want,
                               atol=1e-6)


def test_an_affine_view_moves_by_whole_pixels_before_its_warp():
    """A pure shift is an exact copy with the background coming in; a shift with a warp is the
    shift then the warp, for images whose border is background, as MNIST's is."""
    x = images((5, 12, 12, 1))
    x[:, :2], x[:, -2:], x[:, :, :2], x[:, :, -2:] = -0.5, -0.5, -0.5, -0.5
    moved = affine_view(x, 1, -1, 0, 1.0, -0.5)
    np.testing.assert_array_equal(moved[:, 1:, :-1], x[:, :-1, 1:])
    assert (moved[:, 0] == -0.5).all() and (moved[:, :, -1] == -0.5).all()
    np.testing.assert_allclose(affine_view(x, 1, -1, 8, 1.05, -0.5),
                               affine_view(moved, 0, 0, 8, 1.05, -0.5), atol=1e-5)


def test_tile_cut_is_tiles_and_tile_join_undoes_it():
    from nn.layers import Tiles

    x = images((3, 4, 15, 2))
    np.testing.assert_array_equal(tile_cut(x, 3), Tiles(3).forward(x, training=False))
    np.testing.assert_array_equal(tile_join(tile_cut(x, 3), 3), x)
