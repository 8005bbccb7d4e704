import math

import numpy as np
import pytest

from nn.optim import SGD, Adam, AdamW, clip_grad_norm, decays


def one_param(w, b=None):
    params = {"0.W": np.array(w, dtype=np.float64)}
    if b is not None:
        params["0.b"] = np.array(b, dtype=np.float64)
    return params


def test_plain_sgd_step():
    params = one_param([[1.0, 2.0]], [0.5])
    SGD(lr=0.1).step(params, {"0.W": np.array([[1.0, -1.0]]), "0.b": np.array([2.0])})
    np.testing.assert_allclose(params["0.W"], [[0.9, 2.1]])
    np.testing.assert_allclose(params["0.b"], [0.3])


def test_sgd_momentum_and_nesterov_by_hand():
    g = {"0.W": np.array([[1.0]])}
    p = one_param([[0.0]])
    opt = SGD(lr=0.1, momentum=0.9)
    opt.step(p, g)                          # buf = 1        -> p = -0.1
    opt.step(p, g)                          # buf = 1.9      -> p = -0.29
    assert p["0.W"][0, 0] == pytest.approx(-0.29)
    p = one_param([[0.0]])
    opt = SGD(lr=0.1, momentum=0.9, nesterov=True)
    opt.step(p, g)                          # buf = 1, g' = 1 + 0.9 * 1 = 1.9
    opt.step(p, g)                          # buf = 1.9, g' = 1 + 0.9 * 1.9 = 2.71
    assert p["0.W"][0, 0] == pytest.approx(-0.19 - 0.271)


def test_weight_decay_applies_to_weights_not_biases():
    assert decays(np.zeros((3, 2))) and decays(np.zeros((3, 3, 1, 4)))
    assert not decays(np.zeros(3))
    params = one_param([[2.0]], [2.0])
    zero = {"0.W": np.zeros((1, 1)), "0.b": np.zeros(1)}
    SGD(lr=0.1, weight_decay=0.5).step(params, zero)
    assert params["0.W"][0, 0] == pytest.approx(2.0 - 0.1 * 0.5 * 2.0)
    assert params["0.b"][0] == 2.0


def test_adam_first_steps_by_hand():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p = one_param([[1.0]])
    opt = Adam(lr=lr, betas=(b1, b2), eps=eps)
    grads = [3.0, -1.0, 0.5]
    m = v = 0.0
    expected = 1.0
    for t, g in enumerate(grads, start=1):
        opt.step(p, {"0.W": np.array([[g]])})
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        expected -= lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
        assert p["0.W"][0, 0] == pytest.approx(expected, rel=1e-12)
    assert opt.state["0.W"]["t"] == 3
    # first Adam step moves every coordinate by ~lr, whatever the gradient scale
    p = one_param([[0.0, 0.0]])
    Adam(lr=0.01).step(p, {"0.W": np.array([[1e-3, -50.0]])})
    np.testing.assert_allclose(p["0.W"], [[-0.01, 0.01]], rtol=1e-4)


def test_adam_coupled_vs_adamw_decoupled_decay():
    wd, lr = 0.1, 0.01
    # Adam: decay is part of the gradient -> with zero grad the first step is still ~lr
    p = one_param([[2.0]], [2.0])
    zero = {"0.W": np.zeros((1, 1)), "0.b": np.zeros(1)}
    Adam(lr=lr, weight_decay=wd).step(p, zero)
    assert p["0.W"][0, 0] == pytest.approx(2.0 - lr, rel=1e-6)
    assert p["0.b"][0] == 2.0
    # AdamW: p *= 1 - lr * wd, then an Adam step on the raw gradient (zero here)
    p = one_param([[2.0]], [2.0])
    AdamW(lr=lr, weight_decay=wd).step(p, zero)
    assert p["0.W"][0, 0] == pytest.approx(2.0 * (1 - lr * wd), rel=1e-12)
    assert p["0.b"][0] == 2.0
    assert AdamW().weight_decay == 0.01


def test_float32_stays_float32_and_updates_in_place():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    params = {"0.W": w}
    for opt in (SGD(0.1, momentum=0.9, weight_decay=1e-4), Adam(weight_decay=1e-4), AdamW()):
        opt.step(params, {"0.W": rng.normal(size=(4, 3)).astype(np.float32)})
        assert params["0.W"] is w and w.dtype == np.float32
        for st in opt.state["0.W"].values():
            assert not isinstance(st, np.ndarray) or st.dtype == np.float32


def test_lr_is_settable_and_used():
    p = one_param([[0.0]])
    opt = SGD(lr=1.0)
    opt.lr = 0.25
    opt.step(p, {"0.W": np.array([[1.0]])})
    assert p["0.W"][0, 0] == -0.25


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    grads = [{"0.W": rng.normal(size=(2, 2)), "0.b": rng.normal(size=2)} for _ in range(4)]
    for make in (lambda: Adam(lr=0.1), lambda: SGD(lr=0.1, momentum=0.9)):
        a, pa = make(), one_param(np.ones((2, 2)), np.ones(2))
        for g in grads[:2]:
            a.step(pa, g)
        b, pb = make(), {k: v.copy() for k, v in pa.items()}
        b.load_state_dict(a.state_dict())
        for g in grads[2:]:
            a.step(pa, g)
            b.step(pb, g)
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])


def test_mismatched_keys_or_shapes_raise():
    with pytest.raises(ValueError, match="different keys"):
        SGD(0.1).step(one_param([[1.0]]), {"0.b": np.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        SGD(0.1).step(one_param([[1.0]]), {"0.W": np.zeros(1)})
    with pytest.raises(ValueError, match="nesterov"):
        SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam(betas=(1.0, 0.9))


def test_clip_grad_norm():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    total = clip_grad_norm(grads, max_norm=1.0)
    assert total == pytest.approx(5.0)
    assert math.hypot(grads["a"][0], grads["b"][0, 0]) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(grads["a"] / grads["b"][0], [0.75])
    small = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(small, max_norm=1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])      # under the limit: untouched
    with pytest.raises(ValueError):
        clip_grad_norm(small, 0.0)
