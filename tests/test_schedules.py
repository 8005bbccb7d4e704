import math

import numpy as np
import pytest

from nn.schedules import (Constant, OneCycle, ReduceLROnPlateau, StepDecay, WarmupCosine,
                          make_schedule)


def lrs(schedule, n):
    return np.array([schedule(s) for s in range(n)])


def test_constant_and_step_decay():
    assert lrs(make_schedule("constant", 0.1, 50, 10), 50).tolist() == [0.1] * 50
    s = make_schedule("step", 0.1, 100, 10, step_size=3, gamma=0.5)
    assert s == StepDecay(0.1, 30, 0.5)
    assert s(29) == 0.1 and s(30) == 0.05 and s(60) == 0.025


def test_cosine_with_warmup_shape_and_endpoints():
    s = make_schedule("cosine", 0.1, 100, 10, warmup_epochs=1, min_lr=0.001)
    assert s == WarmupCosine(0.1, 100, 10, 0.001)
    v = lrs(s, 101)
    np.testing.assert_allclose(v[:10], 0.1 * np.arange(1, 11) / 10)    # linear warm-up
    assert v[10] == pytest.approx(0.1)                                 # peak after warm-up
    assert np.all(np.diff(v[10:]) < 0)                                 # then strictly falling
    assert v[55] == pytest.approx((0.1 + 0.001) / 2)                   # half-way: the mean
    assert v[100] == pytest.approx(0.001) and v[99] > 0.001
    assert make_schedule("cosine", 0.1, 100, 10)(0) == 0.1             # no warm-up


def test_onecycle_shape_and_endpoints():
    s = make_schedule("onecycle", 0.1, 100, 10)
    assert s == OneCycle(0.1, 100)
    v = lrs(s, 100)
    assert v[0] == pytest.approx(0.1 / 25)
    assert v.argmax() == 29 and v[29] == pytest.approx(0.1)          # peak at pct_start
    assert np.all(np.diff(v[:30]) > 0) and np.all(np.diff(v[29:]) < 0)
    assert v[99] == pytest.approx(0.1 / 25 / 1e4)
    assert s(500) == v[99]                                            # clamped past the end


def test_plateau_reduces_after_patience_and_honours_cooldown():
    s = ReduceLROnPlateau(1.0, patience=1, factor=0.5, cooldown=1)
    got = [s.step(m) for m in [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]]
    # best 0.6 at epoch 2; 2 bad epochs -> halve; 1 cooldown epoch; 2 more bad -> halve
    assert got == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert s(12345) == 0.25                       # per-step call: the current lr


def test_plateau_min_mode_and_epoch_end():
    s = make_schedule("plateau", 0.1, 100, 10, monitor="loss", patience=0, min_lr=0.02)
    for loss in [1.0, 0.9, 0.95, 0.95, 0.95]:
        s.epoch_end({"loss": loss, "dev_acc": None})
    assert s.lr == 0.02                           # 0.1 -> 0.01 floored at min_lr
    with pytest.raises(ValueError, match="dev_acc"):
        make_schedule("plateau", 0.1, 100, 10).epoch_end({"loss": 1.0, "dev_acc": None})


def test_per_step_schedules_ignore_epoch_end():
    for s in (Constant(0.1), make_schedule("onecycle", 0.1, 10, 5)):
        before = lrs(s, 10)
        s.epoch_end({"dev_acc": 0.5})
        np.testing.assert_array_equal(lrs(s, 10), before)


@pytest.mark.parametrize("name, kwargs, match", [
    ("linear", {}, "unknown schedule 'linear'"),
    ("step", {}, "needs argument.*step_size"),
    ("cosine", {"warmup": 1}, r"unknown argument.*\['warmup'\]"),
    ("cosine", {"warmup_epochs": 20}, "warmup_steps must be"),
    ("onecycle", {"pct_start": 1.5}, "pct_start"),
    ("plateau", {"monitor": "accuracy"}, "monitor"),
    ("step", {"step_size": 2, "gamma": "0.1"}, "bad argument value"),
    ("constant", {"gamma": 0.1}, "unknown argument"),
])
def test_bad_names_and_arguments_raise_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(name, 0.1, 100, 10, **kwargs)


def test_bad_base_lr_raises():
    with pytest.raises(ValueError, match="base_lr"):
        make_schedule("cosine", 0.0, 100, 10)


def test_cosine_interpolates_monotonically_without_min_lr():
    s = WarmupCosine(1.0, 7, 0)
    assert [round(s(i), 6) for i in (0, 7)] == [1.0, 0.0]
    assert s(3) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))
