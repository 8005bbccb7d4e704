"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3).

Train a fresh model for a few hundred mini-batches while the learning rate rises exponentially
from `min_lr` to `max_lr`, and record the loss, smoothed. The loss falls once the rate is large
enough to learn and explodes when it is too large; a good rate lies on the falling slope.
"""

from __future__ import annotations

import math

import numpy as np

from nn.losses import softmax_cross_entropy


def lr_range_test(model, optimizer, x: np.ndarray, y: np.ndarray, *, rng: np.random.Generator,
                  min_lr: float = 1e-6, max_lr: float = 1.0, steps: int = 200,
                  batch_size: int = 128, smoothing: float = 0.98, diverge: float = 4.0,
                  augment=None) -> list[dict]:
    """Records {step, lr, loss, smoothed} of a run with lr = min_lr * (max_lr/min_lr)**(i/(steps-1)).

    x: (N, ...) float32 inputs; y: (N,) int labels, visited in seeded random batches.
    `smoothed` is the bias-corrected exponential moving average of the loss (weight
    `smoothing`). The run stops early, after recording the step, once the smoothed loss exceeds
    `diverge` times its minimum or the loss is not finite. Trains `model` in place.
    """
    if not 0 < min_lr < max_lr or steps < 2:
        raise ValueError(f"need 0 < min_lr < max_lr and steps >= 2, got {min_lr}, {max_lr}, {steps}")
    records: list[dict] = []
    order, at = rng.permutation(len(x)), 0
    avg, best = 0.0, math.inf
    for i in range(steps):
        if at + batch_size > len(x):
            order, at = rng.permutation(len(x)), 0
        idx = order[at:at + batch_size]
        at += batch_size
        xb, yb = x[idx], y[idx]
        if augment is not None:
            xb = augment(xb, rng)
        optimizer.lr = min_lr * (max_lr / min_lr) ** (i / (steps - 1))
        with np.errstate(over="ignore", invalid="ignore"):
            loss, dlogits = softmax_cross_entropy(model.forward(xb, training=True), yb)
            if math.isfinite(loss):
                model.backward(dlogits, input_grad=False)
                optimizer.step(model.params, model.grads)
        avg = smoothing * avg + (1 - smoothing) * loss
        smoothed = avg / (1 - smoothing ** (i + 1))
        records.append({"step": i + 1, "lr": optimizer.lr, "loss": loss, "smoothed": smoothed})
        if not math.isfinite(smoothed) or smoothed > diverge * best:
            break
        best = min(best, smoothed)
    return records


def suggest(records: list[dict]) -> tuple[float, str]:
    """(suggested rate, the rule that gave it): a tenth of the rate at the smoothed loss's minimum,
    which sits on the falling slope, safely below where the loss turns up."""
    finite = [r for r in records if math.isfinite(r["smoothed"])]
    if not finite:
        raise ValueError("no finite loss recorded: lower min_lr")
    low = min(finite, key=lambda r: r["smoothed"])
    return low["lr"] / 10, (f"the smoothed loss is lowest ({low['smoothed']:.3f}) at lr "
                            f"{low['lr']:.2e} (step {low['step']}); a tenth of that")
