import numpy as np
import pytest

from nn.losses import log_softmax, softmax, softmax_cross_entropy


def numerical_grad(f, x, h=1e-5):
    """Centred finite differences of a scalar function f at x (float64)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-12)


@pytest.mark.parametrize("n, k, smoothing", [(1, 2, 0.0), (5, 7, 0.0), (4, 10, 0.1),
                                             (3, 100, 0.3), (6, 3, 0.9)])
def test_gradient_matches_finite_differences(n, k, smoothing):
    rng = np.random.default_rng(n * 100 + k)
    logits = rng.normal(scale=3.0, size=(n, k))
    labels = rng.integers(0, k, size=n)
    _, dlogits = softmax_cross_entropy(logits, labels, smoothing)
    num = numerical_grad(lambda z: softmax_cross_entropy(z, labels, smoothing)[0], logits)
    assert rel_error(dlogits, num) < 1e-6


def test_value_against_direct_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 5))
    labels = rng.integers(0, 5, size=8)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    eps = 0.2
    target = np.full((8, 5), eps / 5)
    target[np.arange(8), labels] += 1 - eps
    loss, _ = softmax_cross_entropy(logits, labels, eps)
    assert loss == pytest.approx(-(target * np.log(p)).sum(axis=1).mean(), rel=1e-12)
    assert softmax_cross_entropy(logits, labels)[0] == pytest.approx(
        -np.log(p[np.arange(8), labels]).mean(), rel=1e-12)


def test_stable_for_huge_logits_and_dtype_follows_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], dtype=np.float32)
    loss, d = softmax_cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert loss == pytest.approx(5e4, rel=1e-6)     # second row: log-sum-exp = 5e4, z_y = -5e4 -> 1e5 / 2
    assert d.dtype == np.float32 and isinstance(loss, float)
    p = softmax(logits)
    assert p.dtype == np.float32 and np.allclose(p.sum(axis=1), 1.0)
    assert np.allclose(np.exp(log_softmax(logits.astype(np.float64))), p, atol=1e-7)


def test_gradient_rows_sum_to_zero():
    rng = np.random.default_rng(1)
    _, d = softmax_cross_entropy(rng.normal(size=(4, 6)), np.array([0, 5, 2, 2]), 0.1)
    assert np.allclose(d.sum(axis=1), 0.0, atol=1e-15)


@pytest.mark.parametrize("logits, labels, smoothing, match", [
    (np.zeros((2, 3)), np.array([0, 3]), 0.0, "labels must lie"),
    (np.zeros((2, 3)), np.array([0, -1]), 0.0, "labels must lie"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), 0.0, "integer"),
    (np.zeros((2, 3)), np.array([0]), 0.0, "labels must be"),
    (np.zeros(3), np.array([0]), 0.0, "logits must be"),
    (np.zeros((2, 3)), np.array([0, 1]), 1.0, "label_smoothing"),
])
def test_bad_inputs_raise(logits, labels, smoothing, match):
    with pytest.raises(ValueError, match=match):
        softmax_cross_entropy(logits, labels, smoothing)
