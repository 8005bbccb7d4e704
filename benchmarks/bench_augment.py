"""Time the training augmentation of each model's params, this tree's nn/augment.py against a
git revision's, side by side in one process.

    .venv/bin/python benchmarks/bench_augment.py [--against REV] [--rounds 5] [--steps 100]

Per model of params.yaml (the MLP: a batch of MNIST digits; the CNN: a batch of MNIST-100 pairs,
each digit warped on its own with augment_tiles), the params' augmentation runs on random
batches of the real training images, `--steps` batches a round, the two implementations in
alternate rounds (a slow spell of the machine falls on both). The engine's threads and BLAS are
set to one thread: the augmentation runs on one either way. Prints ms per batch, the median over
the rounds of each, and the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from threadpoolctl import threadpool_limits

import nn.mnist.training as training
from nn.mnist.modelfile import normalize
from nn.mnist.training import TrainParams, load_split, make_augment, normalization_of

ROOT = Path(__file__).resolve().parents[1]
DATA = {"mlp": "data/mnist", "cnn": "data/mnist100"}  # as dvc.yaml's models map


def augment_module_at(rev: str, scratch: Path):
    """nn/augment.py as it was at git revision `rev`, imported as a module of its own."""
    text = subprocess.run(["git", "show", f"{rev}:nn/augment.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = scratch / "augment_then.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("augment_then", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def then_augment(p: TrainParams, background: float, old):
    """The params' augmentation with the old module's shift, then its warp, as make_augment
    ran them then: this tree's make_augment (the tiles cut as now), the old pair in place of
    the random_warp it calls."""
    def old_warp(xb, gen, rotate, scale, shear, fill, elastic, elastic_sigma, max_shift):
        xb = old.random_shift(xb, max_shift, gen, fill=fill)
        return old.random_warp(xb, gen, rotate, scale, shear, fill=fill, elastic=elastic,
                               elastic_sigma=elastic_sigma)

    inner = make_augment(p, background)

    def augment(xb, gen):
        now, training.random_warp = training.random_warp, old_warp
        try:
            return inner(xb, gen)
        finally:
            training.random_warp = now

    return augment


def per_batch_ms(augment, x: np.ndarray, batch: int, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(x), batch) for _ in range(steps)]
    augment(x[picks[0]], rng)  # warm
    start = time.perf_counter()
    for idx in picks:
        augment(x[idx], rng)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="HEAD", help="git revision of the other nn/augment.py")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    tree = yaml.safe_load((ROOT / "params.yaml").read_text())
    with tempfile.TemporaryDirectory() as scratch, threadpool_limits(1):
        old = augment_module_at(args.against, Path(scratch))
        for model, folder in DATA.items():
            p = TrainParams(**tree[model])
            images, _ = load_split(ROOT / folder, "train")
            norm = normalization_of(images, folder)
            x = normalize(images, norm)
            background = np.float32(-norm["mean"] / norm["std"])
            ways = {"this tree": make_augment(p, background),
                    args.against: then_augment(p, background, old)}
            times: dict[str, list[float]] = {k: [] for k in ways}
            for r in range(args.rounds):
                for name, augment in ways.items():
                    times[name].append(per_batch_ms(augment, x, p.batch_size, args.steps, r))
            now, then = (statistics.median(times[k]) for k in ways)
            print(f"{model}: batch {p.batch_size} of {x.shape[1]}x{x.shape[2]}: this tree "
                  f"{now:.2f} ms, {args.against} {then:.2f} ms a batch (medians of "
                  f"{args.rounds} rounds of {args.steps}): {now / then:.2f}x the time")


if __name__ == "__main__":
    main()
