"""Dev accuracy of one training run scored with several averages of its weights, paired.

    python benchmarks/ema_compare.py --model cnn [--data data/mnist100] [--set cnn.epochs=1 ...]

Trains MODEL exactly as the train stage does (params.yaml's section, its seed, optimiser,
schedule, augmentation), but without early stopping and with the model's own `ema` off, and
after every epoch scores dev with the trained weights and with each of these averages of the
same trajectory (decay d = the section's `ema`, 0.999 when it has none):

    fixed       avg ← avg + (1 - d)(θ - avg) from the initial weights (the average before its
                warm-up: it forgets the initial weights over a few 1 / (1 - d) steps)
    warmup      the same with d_t = min(d, (1 + t) / (10 + t)) (TF's ExponentialMovingAverage
                with num_updates): it spans about the last t / 9 steps
    warmupC     d_t = min(d, (1 + t) / (C + t)), spanning about the last t / (C - 1) steps
    debiased    avg ← avg + (1 - d)(θ - avg) from zero, divided by 1 - d^t (Adam's correction;
                nn.optim.WeightAverage computes the same average as a corrected rate)

Training is the same for every column (the averages never enter a step), so the columns differ
only by how the weights are averaged. `--set key=value` changes the section as `dvc exp run -S`
does (dotted keys inside the model's section; numbers and null as YAML reads them).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ruamel.yaml import YAML  # noqa: E402

from nn.mnist.modelfile import normalize  # noqa: E402
from nn.optim import WeightAverage  # noqa: E402
from nn.schedules import make_schedule  # noqa: E402
from nn.train import evaluate, fit  # noqa: E402
from nn.mnist.params import read_yaml  # noqa: E402
from nn.mnist.training import TrainParams, load_split, start_run, subset  # noqa: E402


class Fixed(WeightAverage):
    """The average before its correction: it starts at the initial weights."""

    def current_decay(self) -> float:
        return self.decay


class Warmup(WeightAverage):
    """d_t = min(d, (1 + t) / (c + t)): the average spans about the last t / (c - 1) steps."""

    def __init__(self, params, decay, c):
        super().__init__(params, decay)
        self.c = c

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (self.c + self.updates))


class Debiased:
    """Adam's bias correction as a division, on a separate buffer from zero."""

    def __init__(self, params, decay):
        self.decay, self.t = decay, 0
        self.raw = {k: np.zeros_like(p) for k, p in params.items()}
        self.avg = {k: np.zeros_like(p) for k, p in params.items()}

    def update(self, params):
        self.t += 1
        for k, p in params.items():
            self.raw[k] += (1 - self.decay) * (p - self.raw[k])

    def swap(self, params):
        for k, p in params.items():
            self.avg[k][...] = self.raw[k] / (1 - self.decay ** self.t)
            held = p.copy()
            p[...] = self.avg[k]
            self.avg[k][...] = held

    def swap_back(self, params):
        for k, p in params.items():
            p[...] = self.avg[k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    section = read_yaml(args.params)[args.model]
    for item in args.set:
        key, _, value = item.partition("=")
        *path, last = key.removeprefix(f"{args.model}.").split(".")
        node = section
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = YAML(typ="safe").load(value)
    decay = section.get("ema") or 0.999
    section = {**section, "ema": None, "early_stopping_patience": None}
    p = TrainParams.model_validate(section)
    data = args.data or Path("data") / ("mnist100" if args.model == "cnn" else "mnist")

    x_train, y_train = subset(*load_split(data, "train"), p.train_size, p.seed)
    x_dev, y_dev = load_split(data, "dev")
    steps = -(-len(y_train) // p.batch_size)
    run = start_run(p, args.model, x_train)  # the network, optimiser, normalisation, augment
    net, rng = run.net, run.rng
    schedule = make_schedule(p.schedule.name, p.optimizer.lr, p.epochs * steps, steps,
                             **p.schedule.args)
    x_train, x_dev = normalize(x_train, run.normalization), normalize(x_dev, run.normalization)

    params = net.params
    averages = {"fixed": Fixed(params, decay), "warmup": Warmup(params, decay, 10),
                "warmup4": Warmup(params, decay, 4), "warmup3": Warmup(params, decay, 3),
                "debiased": Debiased(params, decay)}

    def on_step(*_):
        for a in averages.values():
            a.update(net.params)

    print(f"{args.model}: {len(y_train):,} images, {p.epochs} epochs of {steps} steps, "
          f"decay {decay}; dev accuracy after each epoch:")
    print(f"{'epoch':>5} {'steps':>6} {'trained':>8} " + " ".join(f"{k:>8}" for k in averages))

    def on_epoch(r: dict) -> None:
        row = [r["dev_acc"]]
        for a in averages.values():
            a.swap(net.params)
            row.append(evaluate(net, x_dev, y_dev)[1])
            (a.swap_back if isinstance(a, Debiased) else a.swap)(net.params)
        print(f"{r['epoch']:>5} {r['epoch'] * steps:>6} " + " ".join(f"{v:8.4f}" for v in row),
              flush=True)

    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):
        fit(net, run.optimizer, x_train, y_train, x_dev, y_dev, epochs=p.epochs,
            batch_size=p.batch_size, rng=rng, schedule=schedule, augment=run.augment,
            label_smoothing=p.label_smoothing, clip_norm=p.clip_norm, on_epoch=on_epoch,
            on_step=on_step)
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
