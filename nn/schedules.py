"""Learning-rate schedules.

One interface for all: `schedule(step) -> lr` gives the learning rate of optimiser
step `step` (0-based, counted over the whole run), and `schedule.epoch_end(record)`
is called by `fit()` after each epoch with that epoch's history record. Per-step
schedules ignore `epoch_end`; reduce-on-plateau ignores `step` and reacts to the
monitored metric at the end of each epoch (`.step(metric)` is its torch-style entry).

`make_schedule(name, ...)` builds one from a name and keyword arguments, so that
params.yaml can choose: "constant", "step", "cosine", "onecycle", "plateau".
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field


class Schedule:
    """Base: `__call__(step) -> lr` for every optimiser step, `epoch_end(record)` per epoch."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def epoch_end(self, record: dict) -> None:
        """React to an epoch's history record (a no-op for per-step schedules)."""


@dataclass(frozen=True)
class Constant(Schedule):
    base_lr: float

    def __call__(self, step: int) -> float:
        return self.base_lr


@dataclass(frozen=True)
class StepDecay(Schedule):
    """lr = base_lr * gamma ** (step // step_size), as torch StepLR (counted in steps)."""

    base_lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        _require(self.step_size >= 1, f"step_size must be >= 1 step, got {self.step_size}")
        _require(0.0 < self.gamma <= 1.0, f"gamma must be in (0, 1], got {self.gamma}")

    def __call__(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.step_size)


@dataclass(frozen=True)
class WarmupCosine(Schedule):
    """Linear warm-up to base_lr over `warmup_steps`, then cosine decay to `min_lr`.

    Warm-up: lr(s) = base_lr * (s + 1) / warmup_steps, so step warmup_steps - 1 runs
    at base_lr. Then lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * progress)) / 2,
    progress going from 0 at the end of warm-up to 1 at total_steps.
    """

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0

    def __post_init__(self):
        _require(self.total_steps >= 1, f"total_steps must be >= 1, got {self.total_steps}")
        _require(0 <= self.warmup_steps <= self.total_steps,
                 f"warmup_steps must be in [0, total_steps={self.total_steps}], "
                 f"got {self.warmup_steps}")
        _require(0.0 <= self.min_lr <= self.base_lr,
                 f"min_lr must be in [0, base_lr={self.base_lr}], got {self.min_lr}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class OneCycle(Schedule):
    """One-cycle policy as torch OneCycleLR (two phases, cosine annealing; no momentum cycling).

    Rises from max_lr / div_factor to max_lr over the first pct_start of total_steps,
    then anneals to max_lr / (div_factor * final_div_factor) at step total_steps - 1.
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self):
        _require(self.total_steps >= 2, f"total_steps must be >= 2, got {self.total_steps}")
        _require(0.0 < self.pct_start < 1.0, f"pct_start must be in (0, 1), got {self.pct_start}")
        _require(self.div_factor > 0 and self.final_div_factor > 0,
                 "div_factor and final_div_factor must be > 0")

    def __call__(self, step: int) -> float:
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        step = min(step, self.total_steps - 1)
        peak = self.pct_start * self.total_steps - 1      # float, as torch
        if step <= peak:
            return _cos_anneal(initial, self.max_lr, step / peak if peak > 0 else 1.0)
        return _cos_anneal(self.max_lr, final, (step - peak) / (self.total_steps - 1 - peak))


@dataclass
class ReduceLROnPlateau(Schedule):
    """Multiply the lr by `factor` when `monitor` has not improved for `patience` epochs.

    Semantics of torch ReduceLROnPlateau (relative threshold). `monitor` names a key of
    fit()'s history record; mode is "max" for accuracies, "min" for losses.
    """

    base_lr: float
    monitor: str = "dev_acc"
    factor: float = 0.1
    patience: int = 2
    threshold: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    lr: float = field(init=False)
    best: float = field(init=False)
    bad_epochs: int = field(init=False, default=0)
    cooldown_left: int = field(init=False, default=0)

    def __post_init__(self):
        _require(self.monitor in ("dev_acc", "train_acc", "loss", "dev_loss"),
                 f"monitor must be dev_acc, train_acc, loss or dev_loss, got {self.monitor!r}")
        _require(0.0 < self.factor < 1.0, f"factor must be in (0, 1), got {self.factor}")
        _require(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        self.lr = self.base_lr
        self.best = -math.inf if self.mode == "max" else math.inf

    @property
    def mode(self) -> str:
        return "max" if self.monitor.endswith("acc") else "min"

    def __call__(self, step: int) -> float:
        return self.lr

    def epoch_end(self, record: dict) -> None:
        value = record.get(self.monitor)
        if value is None:
            raise ValueError(f"plateau schedule monitors {self.monitor!r}, "
                             f"which this run does not record (no dev set?)")
        self.step(value)

    def step(self, metric: float) -> float:
        """Take one epoch's metric; returns the learning rate for the next epoch."""
        if self.mode == "max":
            improved = metric > self.best * (1.0 + self.threshold)
        else:
            improved = metric < self.best * (1.0 - self.threshold)
        if improved:
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.cooldown_left, self.bad_epochs = self.cooldown, 0
        return self.lr


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def make_schedule(name: str, base_lr: float, total_steps: int, steps_per_epoch: int,
                  **kwargs) -> Schedule:
    """Build a schedule by name; durations in kwargs are given in epochs.

    constant: -
    step:     step_size (epochs), gamma=0.1
    cosine:   warmup_epochs=0 (may be fractional), min_lr=0.0
    onecycle: pct_start=0.3, div_factor=25, final_div_factor=1e4 (base_lr is the peak)
    plateau:  monitor="dev_acc", factor=0.1, patience=2, threshold=1e-4, cooldown=0, min_lr=0
    Unknown names, unknown or missing arguments and bad values raise ValueError.
    """
    _require(base_lr > 0, f"schedule {name!r}: base_lr must be > 0, got {base_lr}")
    _require(steps_per_epoch >= 1, f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    builders = {
        "constant": lambda: Constant(base_lr),
        "step": lambda step_size, gamma=0.1: StepDecay(
            base_lr, round(step_size * steps_per_epoch), gamma),
        "cosine": lambda warmup_epochs=0, min_lr=0.0: WarmupCosine(
            base_lr, total_steps, round(warmup_epochs * steps_per_epoch), min_lr),
        "onecycle": lambda pct_start=0.3, div_factor=25.0, final_div_factor=1e4: OneCycle(
            base_lr, total_steps, pct_start, div_factor, final_div_factor),
        "plateau": lambda **kw: ReduceLROnPlateau(base_lr, **kw),
    }
    if name not in builders:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(builders)}")
    build = builders[name]
    signature = inspect.signature(ReduceLROnPlateau if name == "plateau" else build)
    allowed = {a: p for a, p in signature.parameters.items() if a != "base_lr"}
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"schedule {name!r} got unknown argument(s) {unknown}; "
                         f"it takes {sorted(allowed) or 'none'}")
    missing = [a for a, p in allowed.items() if p.default is p.empty and a not in kwargs]
    if missing:
        raise ValueError(f"schedule {name!r} needs argument(s) {missing}")
    try:
        return build(**kwargs)
    except TypeError as e:  # a value of the wrong type, e.g. gamma: "0.1" in YAML
        raise ValueError(f"schedule {name!r}: bad argument value ({e})") from None
    except ValueError as e:
        raise ValueError(f"schedule {name!r}: {e}") from None
