"""Reference layers: float64 finite-difference gradient checks, im2col against plain loops, pooling
ties, dropout, BatchNorm statistics. The fast engine is held to these layers in test_fast.py."""

import numpy as np
import pytest

from layertable import CONV_CASES

from nn import init
from nn.gradcheck import check_gradients, numerical_gradient, rel_error
from nn.layers import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    OuterSum,
    ReLU,
    Tiles,
    Untile,
)
from nn.losses import log_softmax

F64 = np.float64
TOL = 1e-6


def randn(rng, *shape):
    return rng.standard_normal(shape)


def assert_gradients(layer, x, **kwargs):
    errors = check_gradients(layer, x, **kwargs)
    assert max(errors.values()) < TOL, errors


# ---------------------------------------------------------------- references: plain loops, float64

def conv_ref(x, w, b, stride, pads):
    """Loop over output pixels. x: (N, H, W, C), w: (kh, kw, C, F), pads: (top, bottom, left, right)."""
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, _, f = w.shape
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, f))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=3) + b
    return out


def conv_ref_backward(x, w, dout, stride, pads):
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = w.shape[:2]
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(dout.shape[1]):
        for j in range(dout.shape[2]):
            rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
            dw += np.tensordot(xp[:, rows, cols, :], dout[:, i, j, :], axes=([0], [0]))
            dxp[:, rows, cols, :] += np.tensordot(dout[:, i, j, :], w, axes=([1], [3]))
    dx = dxp[:, top:top + x.shape[1], left:left + x.shape[2], :]
    return dx, dw, dout.sum(axis=(0, 1, 2))


def maxpool_ref(x, k, s):
    """Loops over every window; the gradient goes to np.argmax: the first maximum, row-major."""
    n, h, w, c = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, ho, wo, c))
    where = np.zeros((n, ho, wo, c, 2), int)
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    win = x[b, i * s:i * s + k, j * s:j * s + k, ch]
                    a = np.argmax(win)
                    out[b, i, j, ch] = win.flat[a]
                    where[b, i, j, ch] = (i * s + a // k, j * s + a % k)
    return out, where


def maxpool_ref_backward(x_shape, where, dout):
    dx = np.zeros(x_shape)
    n, ho, wo, c = dout.shape
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    r, q = where[b, i, j, ch]
                    dx[b, r, q, ch] += dout[b, i, j, ch]
    return dx


# ---------------------------------------------------------------- gradient checks

@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(bias):
    rng = np.random.default_rng(0)
    layer = Linear(7, 5, bias, rng=rng, dtype=F64)
    assert_gradients(layer, randn(rng, 3, 7))




@pytest.mark.parametrize("c_in,c_out,k,s,p,h,w", CONV_CASES)
def test_conv_gradients(c_in, c_out, k, s, p, h, w):
    rng = np.random.default_rng(1)
    layer = Conv2d(c_in, c_out, k, s, p, rng=rng, dtype=F64)
    layer.params["b"] = randn(rng, c_out)
    assert_gradients(layer, randn(rng, 2, h, w, c_in))


@pytest.mark.parametrize("k,s,h,w", [(2, None, 6, 8), (2, None, 5, 7), (3, 2, 7, 8), (2, 1, 4, 5),
                                     (3, 3, 7, 6)])
def test_maxpool_gradients(k, s, h, w):
    rng = np.random.default_rng(2)
    assert_gradients(MaxPool2d(k, s), randn(rng, 2, h, w, 3))


def test_relu_and_flatten_gradients():
    rng = np.random.default_rng(3)
    x = randn(rng, 4, 3, 5, 2)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    assert_gradients(ReLU(), x)
    assert_gradients(Flatten(), x)


def test_outer_sum_gradients_and_its_softmax_is_two_independent_softmaxes():
    rng = np.random.default_rng(8)
    x = randn(rng, 5, 6)                                   # k = 3: 9 pair scores
    assert_gradients(OuterSum(), x)
    out = OuterSum().forward(x, training=False)
    assert out.shape == (5, 9) and out[2, 1 * 3 + 2] == x[2, 1] + x[2, 3 + 2]
    pair = log_softmax(out).reshape(5, 3, 3)
    np.testing.assert_allclose(pair, log_softmax(x[:, :3])[:, :, None] + log_softmax(x[:, 3:])[:, None, :],
                               atol=1e-12)
    with pytest.raises(ValueError, match="even number of scores, got 5"):
        OuterSum().output_shape((5,))


def test_tiles_cut_each_image_into_side_by_side_examples_and_untile_regroups_them():
    rng = np.random.default_rng(11)
    x = randn(rng, 3, 4, 6, 2)                             # 3 images, 2 tiles of width 3 each
    tiles = Tiles(2).forward(x, training=False)
    assert tiles.shape == (6, 4, 3, 2)
    np.testing.assert_array_equal(tiles[2 * 1 + 0], x[1, :, :3])   # image 1's left tile
    np.testing.assert_array_equal(tiles[2 * 1 + 1], x[1, :, 3:])   # and its right one
    assert Tiles(3).output_shape((28, 84, 1)) == (28, 28, 1)
    scores = randn(rng, 6, 5)                              # 5 scores per tile
    joined = Untile(2).forward(scores, training=False)
    np.testing.assert_array_equal(joined[1], np.concatenate([scores[2], scores[3]]))
    assert Untile(2).output_shape((5,)) == (10,)


def test_tiles_and_untile_gradients():
    rng = np.random.default_rng(12)
    assert_gradients(Tiles(2), randn(rng, 2, 3, 4, 2))
    assert_gradients(Tiles(3), randn(rng, 2, 2, 6, 1))
    assert_gradients(Untile(2), randn(rng, 4, 3))


@pytest.mark.parametrize("call, message", [
    (lambda: Tiles(2).forward(np.zeros((2, 4, 5, 1)), False), "width divisible by 2, got 5"),
    (lambda: Tiles(2).forward(np.zeros((2, 4, 6)), False), r"expects \(N, H, W, C\) images"),
    (lambda: Tiles(2).output_shape((4, 7, 1)), "width divisible by 2, got 7"),
    (lambda: Untile(2).forward(np.zeros((3, 4)), False), "N divisible by 2"),
    (lambda: Untile(2).output_shape((2, 5)), r"expects \(F,\) per tile"),
    (lambda: Tiles(0), "parts must be a positive int, got 0"),
])
def test_tiles_and_untile_name_what_does_not_fit(call, message):
    with pytest.raises(ValueError, match=message):
        call()

def test_dropout_gradients():
    rng = np.random.default_rng(4)
    layer = Dropout(0.4, rng=rng)

    def reseed():
        layer.rng = np.random.default_rng(7)

    assert_gradients(layer, randn(rng, 5, 6), before_forward=reseed)


@pytest.mark.parametrize("layer_cls,shape", [(BatchNorm1d, (6, 4)), (BatchNorm2d, (3, 5, 7, 4)),
                                             (BatchNorm2d, (2, 3, 2, 4))])
def test_batchnorm_gradients_in_training(layer_cls, shape):
    rng = np.random.default_rng(5)
    layer = layer_cls(4, dtype=F64)
    layer.params["gamma"] = randn(rng, 4)
    layer.params["beta"] = randn(rng, 4)
    assert_gradients(layer, randn(rng, *shape) * 3 + 1)


def test_numerical_gradient_of_a_known_function():
    x = np.array([1.0, -2.0, 3.0])
    g = numerical_gradient(lambda: float(np.sum(x ** 3)), x)
    assert rel_error(g, 3 * x ** 2) < 1e-9
    assert np.array_equal(x, [1.0, -2.0, 3.0])  # restored


# ---------------------------------------------------------------- im2col / col2im against loops

@pytest.mark.parametrize("c_in,c_out,k,s,p,h,w", [c for c in CONV_CASES if not isinstance(c[2], tuple)])
def test_conv_matches_loop_reference(c_in, c_out, k, s, p, h, w):
    rng = np.random.default_rng(6)
    layer = Conv2d(c_in, c_out, k, s, p, rng=rng, dtype=F64)
    layer.params["b"] = randn(rng, c_out)
    x = randn(rng, 3, h, w, c_in)
    out = layer.forward(x, training=True)
    ref = conv_ref(x, layer.params["W"], layer.params["b"], s, layer.pads)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    dout = randn(rng, *out.shape)
    dx = layer.backward(dout)
    dx_ref, dw_ref, db_ref = conv_ref_backward(x, layer.params["W"], dout, s, layer.pads)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], dw_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], db_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,h,w", [(2, None, 6, 8), (2, None, 7, 9), (3, 2, 7, 8), (2, 1, 5, 4)])
def test_maxpool_matches_loop_reference_with_ties(k, s, h, w):
    """MNIST-like input: mostly exact zeros and repeated values, so most windows have ties."""
    rng = np.random.default_rng(8)
    x = rng.choice([0.0, 0.0, 0.0, 0.5, 1.0], size=(2, h, w, 3))
    layer = MaxPool2d(k, s)
    out = layer.forward(x, training=True)
    ref, where = maxpool_ref(x, k, s or k)
    np.testing.assert_array_equal(out, ref)
    dout = randn(rng, *out.shape)
    # overlapping windows (stride < kernel) add gradients in another order: allow rounding only
    np.testing.assert_allclose(layer.backward(dout), maxpool_ref_backward(x.shape, where, dout),
                               rtol=0, atol=1e-14)


def test_maxpool_tie_gradient_goes_to_first_maximum_only():
    x = np.zeros((1, 4, 4, 1))
    x[0, 2:, 2:, 0] = 7.0  # one window of four equal maxima, three windows of zeros
    layer = MaxPool2d(2)
    layer.forward(x, training=True)
    dx = layer.backward(np.ones((1, 2, 2, 1)))
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1.0  # top-left of every window
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)


# ---------------------------------------------------------------- behaviour

def test_dropout_is_inverted_and_seeded():
    x = np.ones((200, 50), np.float32)
    a = Dropout(0.3, rng=np.random.default_rng(1)).forward(x, training=True)
    b = Dropout(0.3, rng=np.random.default_rng(1)).forward(x, training=True)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.7)}
    assert abs((a == 0).mean() - 0.3) < 0.02
    assert abs(a.mean() - 1.0) < 0.03  # inverted: the expectation is unchanged
    layer = Dropout(0.3, rng=np.random.default_rng(1))
    assert layer.forward(x, training=False) is x
    out = layer.forward(x, training=True)
    np.testing.assert_array_equal(layer.backward(np.full_like(x, 2.0)), 2.0 * out)
    gen = np.random.default_rng(1)
    np.testing.assert_array_equal(Dropout(0.0, rng=gen).forward(x, training=True), x)
    assert gen.random() == np.random.default_rng(1).random()  # p = 0 draws nothing
    assert not Dropout(1.0, rng=np.random.default_rng(1)).forward(x, training=True).any()


def test_batchnorm_running_statistics_and_inference():
    rng = np.random.default_rng(12)
    layer = BatchNorm2d(3, momentum=0.2, dtype=F64)
    x = randn(rng, 4, 5, 6, 3) * 2 + 3
    out = layer.forward(x, training=True)
    flat = x.reshape(-1, 3)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(out.reshape(-1, 3).var(0), 1, rtol=1e-4)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.2 * flat.mean(0))
    np.testing.assert_allclose(layer.buffers["running_var"], 0.8 + 0.2 * flat.var(0, ddof=1))
    y = layer.forward(x, training=False)
    rm, rv = layer.buffers["running_mean"], layer.buffers["running_var"]
    np.testing.assert_allclose(y, (x - rm) / np.sqrt(rv + 1e-5))
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(y)


def test_float32_in_float32_out():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 6, 8, 2)).astype(np.float32)
    for layer in [Conv2d(2, 3, 3, padding=1, rng=rng), MaxPool2d(2), ReLU(), BatchNorm2d(2),
                  Dropout(0.5, rng=rng), Flatten()]:
        out = layer.forward(x, training=True)
        assert out.dtype == np.float32, layer
        assert layer.backward(np.ones_like(out)).dtype == np.float32, layer
        for k, g in layer.grads.items():
            assert g.dtype == np.float32 and g.shape == layer.params[k].shape, (layer, k)
    lin = Linear(5, 3, rng=rng)
    assert lin.forward(np.ones((2, 5), np.float32), True).dtype == np.float32


def test_init_statistics_and_determinism():
    w = init.he_normal((400, 300), 400, np.random.default_rng(0))
    assert w.dtype == np.float32 and abs(w.std() - np.sqrt(2 / 400)) < 1e-3
    u = init.he_uniform((400, 300), 400, np.random.default_rng(0))
    assert abs(u.std() - np.sqrt(2 / 400)) < 1e-3
    g = init.glorot_uniform((400, 300), 400, 300, np.random.default_rng(0))
    assert np.abs(g).max() <= np.sqrt(6 / 700) and abs(g.std() - np.sqrt(2 / 700)) < 1e-3
    gn = init.glorot_normal((400, 300), 400, 300, np.random.default_rng(0))
    assert abs(gn.std() - np.sqrt(2 / 700)) < 1e-3
    a = Conv2d(3, 8, 3, rng=np.random.default_rng(5), init="glorot").params["W"]
    b = Conv2d(3, 8, 3, rng=np.random.default_rng(5), init="glorot").params["W"]
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="init"):
        Linear(3, 4, rng=np.random.default_rng(0), init="xavier")


@pytest.mark.parametrize("make,match", [
    (lambda rng: Conv2d(1, 2, 3, stride=2, padding="same", rng=rng), "same"),
    (lambda rng: Conv2d(1, 2, 0, rng=rng), "kernel_size"),
    (lambda rng: Conv2d(1, 2, 3, padding=-1, rng=rng), "padding"),
    (lambda rng: Linear(0, 2, rng=rng), "in_features"),
    (lambda rng: Dropout(1.5, rng=rng), "p must"),
    (lambda rng: MaxPool2d(2, stride=0), "stride"),
    (lambda rng: BatchNorm2d(4, momentum=2), "momentum"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(np.random.default_rng(0))


def test_shape_errors_name_the_layer():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="input channels"):
        Conv2d(3, 2, 3, rng=rng).forward(np.ones((1, 5, 5, 1)), True)
    with pytest.raises(ValueError, match="Linear expects"):
        Linear(4, 2, rng=rng).forward(np.ones((2, 5)), True)
    with pytest.raises(ValueError, match="BatchNorm2d"):
        BatchNorm2d(3).forward(np.ones((2, 4, 4, 2)), True)
