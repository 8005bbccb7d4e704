import numpy as np
import pytest

from nn.losses import softmax_cross_entropy
from nn.optim import SGD, Adam, WeightAverage
from nn.schedules import make_schedule
from nn.train import DivergedError, evaluate, fit

Sequential = pytest.importorskip("nn.model").Sequential

MLP = [{"type": "Flatten"}, {"type": "Linear", "in_features": 6, "out_features": 16},
       {"type": "ReLU"}, {"type": "Dropout", "p": 0.1},
       {"type": "Linear", "in_features": 16, "out_features": 3}]


def separable(n, seed):
    """n images (2, 3, 1); the class is which of three fixed directions scores highest."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    directions = np.eye(3, 6, dtype=np.float32) * 4 + np.eye(3, 6, 3, dtype=np.float32) * 2
    y = (x @ directions.T).argmax(axis=1)
    return x.reshape(n, 2, 3, 1), y


def model(seed=0, spec=MLP):
    return Sequential.from_spec(spec, np.random.default_rng(seed))


def test_tiny_separable_problem_reaches_100_percent_and_loss_falls():
    x, y = separable(96, seed=1)
    net = model()
    history = fit(net, Adam(lr=0.02), x, y, x, y, epochs=60, batch_size=16,
                  rng=np.random.default_rng(0))
    assert [set(r) for r in history[:1]] == [{"epoch", "loss", "train_acc", "dev_loss",
                                             "dev_acc", "lr", "seconds"}]
    assert [r["epoch"] for r in history] == list(range(1, 61))
    losses = [r["loss"] for r in history]
    assert losses[-1] < 0.2 * losses[0]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert history[-1]["dev_acc"] == 1.0
    assert evaluate(net, x, y, batch_size=7)[1] == 1.0
    assert all(r["lr"] == 0.02 and r["seconds"] > 0 for r in history)


def train_once(seed):
    x, y = separable(50, seed=2)

    def augment(xb, rng):           # uses fit's rng: part of what must be reproducible
        return xb + rng.normal(scale=0.05, size=xb.shape).astype(np.float32)

    net = model(seed)
    fit(net, Adam(lr=0.01, weight_decay=1e-3), x, y, epochs=3, batch_size=8,
        rng=np.random.default_rng(seed), augment=augment, label_smoothing=0.1, clip_norm=1.0,
        schedule=make_schedule("onecycle", 0.01, total_steps=21, steps_per_epoch=7))
    return net.state_dict()


def test_same_seed_gives_bitwise_identical_weights():
    a, b, c = train_once(0), train_once(0), train_once(1)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert any(a[k].tobytes() != c[k].tobytes() for k in a)


def test_nan_loss_raises_diverged_error_naming_epoch_and_step():
    x, y = separable(32, seed=3)
    x[20] = np.nan
    with pytest.raises(DivergedError, match=r"training diverged: loss became nan at epoch 1, step \d/4"):
        fit(model(), SGD(0.1), x, y, epochs=2, batch_size=8, rng=np.random.default_rng(0))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_exploding_learning_rate_raises_instead_of_returning_a_nan_model():
    x, y = separable(32, seed=3)
    with pytest.raises(DivergedError, match="epoch"):
        fit(model(), SGD(1e30), x * 1e10, y, epochs=5, batch_size=8,
            rng=np.random.default_rng(0))


@pytest.mark.parametrize("ema", [None, 0.5], ids=["trained", "ema"])  # ema: the best averaged epoch
def test_early_stopping_restores_the_best_dev_weights(ema):
    x, y = separable(64, seed=4)
    x_dev, _ = separable(40, seed=5)
    y_dev = np.random.default_rng(6).integers(0, 3, size=40)   # noise: dev acc wanders
    snapshots = {}
    net = model()
    history = fit(net, Adam(lr=0.05), x, y, x_dev, y_dev, epochs=30, batch_size=16,
                  rng=np.random.default_rng(0), early_stopping_patience=2, ema=ema,
                  on_epoch=lambda r: snapshots.update({r["epoch"]: net.state_dict()}))
    dev = [r["dev_acc"] for r in history]
    best = int(np.argmax(dev)) + 1                             # first best epoch
    assert len(history) == 30 or len(history) == best + 2
    assert len(history) < 30                                   # random dev labels plateau
    final = net.state_dict()
    for k in final:
        np.testing.assert_array_equal(final[k], snapshots[best][k])
    assert evaluate(net, x_dev, y_dev, 16)[1] == dev[best - 1]


def test_weight_average_is_the_exponential_moving_average_and_swaps_back():
    params = {"w": np.array([0.0, 10.0])}
    average = WeightAverage(params, decay=0.5)
    # the warm-up's decays (1 + t) / (10 + t) for t = 0, 1, 2, ... until they reach 0.5
    assert average.current_decay() == 0.1
    for value in (2.0, 4.0):
        params["w"][...] = value
        average.update(params)
    assert average.updates == 2 and average.current_decay() == 0.25
    # avg: [0, 10] -> (d 0.1) [1.8, 2.8] -> (d 2/11) [1.8 + 9/11 * 2.2, 2.8 + 9/11 * 1.2]
    np.testing.assert_allclose(average.avg["w"], [1.8 + 9 / 11 * 2.2, 2.8 + 9 / 11 * 1.2])
    for _ in range(20):
        average.update(params)
    assert average.current_decay() == 0.5                      # warmed up: the plain decay
    params["w"][...], average.avg["w"][...] = [4.0, 4.0], [2.5, 5.0]
    live = params["w"]
    average.swap(params)
    assert params["w"] is live                                 # in place: views stay valid
    np.testing.assert_array_equal(live, [2.5, 5.0])
    average.swap(params)
    np.testing.assert_array_equal(live, [4.0, 4.0])
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\), got 1"):
        WeightAverage(params, decay=1)


def test_a_short_run_with_a_slow_average_scores_as_well_as_its_trained_weights():
    """decay 0.999 forgets over 1,000 steps; this run takes 18. Without the warm-up the average
    would still be the initial weights (chance); with it, it follows the trained ones."""
    x, y = separable(96, seed=1)
    x_dev, y_dev = separable(60, seed=2)
    scores = {}
    for ema in (None, 0.999):
        net = model()
        history = fit(net, Adam(lr=0.02), x, y, x_dev, y_dev, epochs=3, batch_size=16,
                      rng=np.random.default_rng(0), ema=ema)
        scores[ema] = history[-1]["dev_acc"]
    initial = evaluate(model(), x_dev, y_dev)[1]
    assert scores[None] > initial + 0.3                       # the run learns
    assert scores[0.999] >= scores[None] - 0.05               # and its average with it


def test_ema_scores_dev_with_the_average_and_the_model_ends_with_it():
    x, y = separable(48, seed=11)
    x_dev, y_dev = separable(30, seed=12)
    net, steps = model(), []
    expected = {k: v.copy() for k, v in net.params.items()}   # the average, step by step

    def on_step(*_):
        steps.append({k: v.copy() for k, v in net.params.items()})
        t = len(steps) - 1                                       # the warm-up's decay, then 0.9
        for k, v in net.params.items():
            expected[k] += (1 - min(0.9, (1 + t) / (10 + t))) * (v - expected[k])

    history = fit(net, Adam(lr=0.05), x, y, x_dev, y_dev, epochs=3, batch_size=16,
                  rng=np.random.default_rng(0), ema=0.9, on_step=on_step)
    for k, v in net.params.items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-6, atol=1e-7)
    assert history[-1]["dev_acc"] == evaluate(net, x_dev, y_dev)[1]
    # the same run without the average trains through the same weights
    plain, plain_steps = model(), []
    fit(plain, Adam(lr=0.05), x, y, x_dev, y_dev, epochs=3, batch_size=16,
        rng=np.random.default_rng(0),
        on_step=lambda *_: plain_steps.append({k: v.copy() for k, v in plain.params.items()}))
    for a, b in zip(steps, plain_steps, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_progress_hook_schedule_and_plateau():
    x, y = separable(20, seed=7)
    steps = []
    sched = make_schedule("step", 0.1, total_steps=9, steps_per_epoch=3, step_size=1, gamma=0.5)
    history = fit(model(), SGD(0.1), x, y, epochs=3, batch_size=8, rng=np.random.default_rng(0),
                  schedule=sched, on_step=lambda s, n, loss: steps.append((s, n, loss)))
    assert [(s, n) for s, n, _ in steps] == [(1, 3), (2, 3), (3, 3)] * 3
    assert all(np.isfinite(loss) for _, _, loss in steps)
    assert [r["lr"] for r in history] == [0.1, 0.05, 0.025]
    assert history[0]["dev_acc"] is None

    plateau = make_schedule("plateau", 0.1, 9, 3, monitor="loss", patience=0, factor=0.5)
    opt = SGD(0.1)
    fit(model(), opt, x, y, epochs=4, batch_size=8, rng=np.random.default_rng(0),
        schedule=plateau)
    assert opt.lr == plateau.lr                                # epoch_end was called


def test_gradient_clipping_bounds_each_update():
    x, y = separable(16, seed=8)
    net = model()
    before = {k: v.copy() for k, v in net.params.items()}
    fit(net, SGD(1.0), x * 100, y, epochs=1, batch_size=16, rng=np.random.default_rng(0),
        clip_norm=1e-3)
    moved = np.sqrt(sum(((net.params[k] - before[k]) ** 2).sum() for k in before))
    assert 0 < moved <= 1e-3 * (1 + 1e-4)


def test_evaluate_matches_one_big_batch():
    x, y = separable(23, seed=9)
    net = model()
    logits = net.forward(x, training=False)
    loss, acc = evaluate(net, x, y, batch_size=5)
    assert loss == pytest.approx(softmax_cross_entropy(logits.astype(np.float64), y)[0], rel=1e-5)
    assert acc == np.mean(logits.argmax(axis=1) == y)


@pytest.mark.parametrize("kwargs, match", [
    ({"x": "float64"}, "float32"),
    ({"early_stopping_patience": 2}, "dev set"),
    ({"epochs": 0}, "epochs"),
    ({"y": "short"}, "labels"),
])
def test_bad_arguments_raise(kwargs, match):
    x, y = separable(8, seed=10)
    if kwargs.pop("x", None):
        x = x.astype(np.float64)
    if kwargs.pop("y", None):
        y = y[:5]
    args = {"epochs": 1, "batch_size": 4, "rng": np.random.default_rng(0)} | kwargs
    with pytest.raises(ValueError, match=match):
        fit(model(), SGD(0.1), x, y, **args)
