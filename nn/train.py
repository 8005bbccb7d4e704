"""The training loop: seeded shuffling, mini-batches, history, early stopping, on the CPU or a GPU."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from nn.backend import CPU, Device
from nn.losses import log_softmax, softmax_cross_entropy
from nn.optim import WeightAverage, clip_grad_norm


TRANSFERS = ("batch", "once")  # how training data reach the device: see fit
# A batch's mean cross-entropy above this is a run that has blown up: a uniform guess scores
# log(classes), under 5 for 100 classes, and a logit gap of 10,000 is no model.
ABSURD_LOSS = 1e4


class DivergedError(RuntimeError):
    """The loss became absurd (NaN, infinite, or above ABSURD_LOSS) or the weights non-finite."""


class UselessModelError(RuntimeError):
    """Training ended with a model that scores dev at chance although it learned its training set."""


def check_useful(record: dict, y_dev: np.ndarray) -> None:
    """Refuse the kept epoch's model when its dev accuracy is at chance while its training
    accuracy is not: such a contradiction is a bug or a data mismatch, never a result.

    Chance is the most frequent dev label's share (a constant guess); "at chance" is within a
    tenth of the way from it to 100 %, "learned" at least half of the way there. (The weight
    average is not a cause: an epoch keeps it only where it scores at least the trained weights.)
    """
    counts = np.bincount(y_dev)
    chance = counts.max() / counts.sum()
    dev, train = record["dev_acc"], record["train_acc"]
    if dev < chance + 0.1 * (1 - chance) and train >= chance + 0.5 * (1 - chance):
        raise UselessModelError(
            f"training gave a useless model: dev accuracy {dev:.1%} is at chance ({chance:.1%}) "
            f"while training accuracy is {train:.1%} (epoch {record['epoch']}); likely cause: "
            f"dev data that do not match the training data (labels or preprocessing)")


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000,
             device: Device = CPU) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` (its parameters on `device`) in inference mode.

    x: (N, ...) float32 inputs; y: (N,) int labels, NumPy or on the device. Returns
    (loss, accuracy in [0, 1]) as Python floats.
    """
    xp = device.xp
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"evaluate needs matching non-empty x and y, got {len(x)} and {len(y)}")
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model.forward(device.asarray(x[start:start + batch_size]), training=False)
        yb = device.asarray(y[start:start + batch_size])
        log_p = log_softmax(logits)
        total_loss -= float(log_p[xp.arange(len(yb)), yb].sum(dtype=np.float64))
        correct += int((logits.argmax(axis=1) == yb).sum())
    return total_loss / len(x), correct / len(x)


def _check_data(name: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.dtype != np.float32:
        raise ValueError(f"{name}: inputs must be float32, got {x.dtype} (convert once, before fit)")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{name}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} inputs but {len(y)} labels")


def fit(model, optimizer, x_train: np.ndarray, y_train: np.ndarray,
        x_dev: np.ndarray | None = None, y_dev: np.ndarray | None = None, *,
        epochs: int, batch_size: int, rng: np.random.Generator,
        schedule=None, augment: Callable | None = None, label_smoothing: float = 0.0,
        clip_norm: float | None = None, early_stopping_patience: int | None = None,
        ema: float | None = None, device: Device = CPU, transfer: str = "batch",
        on_epoch: Callable[[dict], None] | None = None,
        on_step: Callable[[int, int, float], None] | None = None) -> list[dict]:
    """Train `model` in place with mini-batch gradient descent; returns the per-epoch history.

    x_train: (N, H, W, 1) float32; y_train: (N,) int. Each epoch visits a fresh permutation
    drawn from `rng` in batches of `batch_size` (the last may be smaller); the batches are
    indexed, the training set is never copied. `augment(xb, rng) -> xb` runs on each batch.
    `schedule(step)` sets optimizer.lr before every step (step counted over the run) and
    `schedule.epoch_end(record)`, if present, runs after every epoch.
    Each record: epoch (1-based), loss (mean training loss), train_acc (running accuracy
    over the epoch's batches in training mode, i.e. while the weights change: cheap, not
    a separate pass), dev_loss and dev_acc (inference mode; None without a dev set),
    averaged (whether dev_acc is that of the weight average, below), lr (that of the epoch's
    first step), seconds; all Python numbers, wherever the model lives.
    `device` is where the model's parameters live (nn.backend; `model.to(device)` first). The
    data arrive as NumPy, and `transfer` says how they reach the device: "batch" cuts and
    augments each batch on the host and copies it there; "once" copies the training set there
    before the first epoch and cuts and augments the batches there. Shuffling, shifts and
    dropout masks are drawn on the host from `rng` either way, so both see the same batches.
    With early_stopping_patience=p, training stops after p epochs without a better dev
    accuracy, and the weights of the best epoch are restored at the end. With `ema` (a decay
    in (0, 1)), an exponential moving average of the weights follows the training
    (nn.optim.WeightAverage): after each epoch dev is scored with it and with the trained
    weights, the better of the two counts as the epoch's (record["averaged"] says which; ties
    go to the average), and the model ends with the last (or the best) epoch's.
    `on_step(step, steps_per_epoch, loss)` is called after each step (step 1-based in the
    epoch). A NaN/inf or absurd (> ABSURD_LOSS) loss, or a NaN/inf weight, raises
    DivergedError: a blown-up model is never returned. Nor is a useless one: a kept epoch
    whose dev accuracy is at chance while its training accuracy is not raises
    UselessModelError (check_useful).
    """
    _check_data("train", x_train, y_train)
    has_dev = x_dev is not None and y_dev is not None
    if has_dev:
        _check_data("dev", x_dev, y_dev)
    elif x_dev is not None or y_dev is not None:
        raise ValueError("give both x_dev and y_dev, or neither")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if early_stopping_patience is not None and not has_dev:
        raise ValueError("early stopping needs a dev set (x_dev, y_dev)")
    if len(x_train) == 0:
        raise ValueError("train: no examples")
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {', '.join(TRANSFERS)}, got {transfer!r}")
    average = None if ema is None else WeightAverage(model.params, ema)
    xp = device.xp
    if transfer == "once":  # the batches below then index arrays on the device
        x_train, y_train = device.asarray(x_train), device.asarray(y_train)

    n = len(x_train)
    steps_per_epoch = math.ceil(n / batch_size)
    epoch_end = getattr(schedule, "epoch_end", None)
    history: list[dict] = []
    best_acc, best_state, best_epoch = -1.0, None, 0
    global_step = 0
    for epoch in range(1, epochs + 1):
        start_time = time.perf_counter()
        order = rng.permutation(n)
        epoch_lr = None
        loss_sum, correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            if transfer == "once":
                idx = device.asarray(idx)
            xb, yb = x_train[idx], y_train[idx]          # copies one batch only
            if augment is not None:
                xb = augment(xb, rng)
            xb, yb = device.asarray(xb), device.asarray(yb)  # no copy if there already
            if schedule is not None:
                optimizer.lr = float(schedule(global_step))
            if epoch_lr is None:
                epoch_lr = optimizer.lr

            logits = model.forward(xb, training=True)
            loss, dlogits = softmax_cross_entropy(logits, yb, label_smoothing)
            if not loss <= ABSURD_LOSS:  # NaN fails every comparison
                raise DivergedError(f"training diverged: loss became {loss:.4g} at epoch {epoch}, "
                                    f"step {step + 1}/{steps_per_epoch} (lr {optimizer.lr:g})")
            model.backward(dlogits, input_grad=False)
            grads = model.grads  # fetched anew: layers may rebind them
            if clip_norm is not None:
                clip_grad_norm(grads, clip_norm)
            optimizer.step(model.params, grads)
            if average is not None:
                average.update(model.params)
            global_step += 1

            loss_sum += loss * len(yb)
            correct += int((logits.argmax(axis=1) == yb).sum())
            if on_step is not None:
                on_step(step + 1, steps_per_epoch, loss)

        bad = [k for k, p in model.params.items() if not bool(xp.isfinite(p).all())]
        if bad:
            raise DivergedError(f"training diverged: weights {bad[:3]} became non-finite "
                                f"in epoch {epoch} (lr {optimizer.lr:g})")
        averaged = average is not None
        if averaged:
            average.swap(model.params)  # dev scored, and the best epoch kept, averaged
        dev_loss, dev_acc = (evaluate(model, x_dev, y_dev, batch_size, device) if has_dev
                             else (None, None))
        if averaged and has_dev:
            # The weights the average follows are scored too, and the better of the two kept:
            # an average over steps still far from the end (a short run, an early epoch) would
            # otherwise cost accuracy.
            average.swap(model.params)
            trained_loss, trained_acc = evaluate(model, x_dev, y_dev, batch_size, device)
            if trained_acc > dev_acc:
                dev_loss, dev_acc, averaged = trained_loss, trained_acc, False
            else:
                average.swap(model.params)
        record = {"epoch": epoch, "loss": loss_sum / n, "train_acc": correct / n,
                  "dev_loss": dev_loss, "dev_acc": dev_acc, "averaged": averaged, "lr": epoch_lr,
                  "seconds": time.perf_counter() - start_time}
        history.append(record)
        if epoch_end is not None:
            epoch_end(record)
        if on_epoch is not None:
            on_epoch(record)

        stop = False
        if early_stopping_patience is not None:
            if dev_acc > best_acc:
                best_acc, best_state, best_epoch = dev_acc, model.state_dict(), epoch
            else:
                stop = epoch - best_epoch >= early_stopping_patience
        if averaged and not (stop or epoch == epochs):
            average.swap(model.params)  # training goes on with its own weights
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    if has_dev:
        check_useful(history[best_epoch - 1] if best_state is not None else history[-1], y_dev)
    return history
