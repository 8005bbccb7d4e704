"""The charts of nn lr-find, nn tune and nn change-report: ticks a person would choose."""

import math

import pytest

from nn.mnist.charts import log_ticks, nice_ticks, xy_chart


def mantissa(step: float) -> float:
    return round(step / 10 ** math.floor(math.log10(step) + 1e-9), 6)


@pytest.mark.parametrize("lo, hi", [(0, 15), (0.9512, 0.9871), (-0.5, 0.5), (0.0021, 2.4),
                                    (3, 4), (1e-5, 3e-5), (120, 980)])
def test_ticks_are_multiples_of_1_2_or_5_times_a_power_of_ten(lo, hi):
    ticks = nice_ticks(lo, hi)
    values = [v for v, _ in ticks]
    assert 3 <= len(values) <= 11, ticks
    assert all(lo - 1e-12 <= v <= hi + 1e-12 for v in values)
    step = values[1] - values[0]
    assert mantissa(step) in (1, 2, 5), ticks
    for v in values:  # every tick a whole multiple of the step, and its label the number
        assert abs(v / step - round(v / step)) < 1e-6
    assert all(float(label) == pytest.approx(v) for v, label in ticks)


@pytest.mark.parametrize("hi", [1, 3, 11, 15, 150])
def test_trial_and_epoch_axes_have_whole_ticks(hi):
    """nn tune's history chart put ticks at trial 3.75 and 11.2."""
    ticks = nice_ticks(0, hi, whole=True)
    assert all(float(v).is_integer() and label == str(int(v)) for v, label in ticks), ticks
    assert mantissa(ticks[1][0] - ticks[0][0]) in (1, 2, 5)


@pytest.mark.parametrize("lo, hi, expected", [
    (1e-7, 10, ["1e-07", "1e-06", "1e-05", "1e-04", "1e-03", "0.01", "0.1", "1", "10"]),
    (1e-4, 0.05, ["1e-04", "2e-04", "5e-04", "1e-03", "2e-03", "5e-03", "0.01", "0.02", "0.05"]),
])
def test_log_ticks_fall_on_decades_not_half_decades(lo, hi, expected):
    """The lr-find chart's x ticks fell on half-decades (3e-05, 3e-03)."""
    assert [label for _, label in log_ticks(lo, hi)] == expected


def test_a_chart_with_trial_numbers_draws_the_same_pixels_twice():
    series = [("complete", list(range(16)), [0.9 + i / 200 for i in range(16)])]
    a = xy_chart(series, title="t", x_label="trial", y_label="dev accuracy", lines=False)
    b = xy_chart(series, title="t", x_label="trial", y_label="dev accuracy", lines=False)
    assert a.tobytes() == b.tobytes() and a.size == (640, 400)
