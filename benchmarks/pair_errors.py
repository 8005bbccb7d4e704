"""Where an MNIST-100 model's pair errors come from, and what averaging models would give.

    python benchmarks/pair_errors.py MODEL.npz [MODEL.npz ...] [--data data/mnist100] \
        [--params params.yaml]

For each model file (the CNN's, e.g. from `time_to_accuracy.py --keep`), on dev and test, each
pair scored as the evaluate stage scores it (the test-time views of `--params`' evaluate section):
the pairs wrong, and the distinct MNIST digits misread. A split's pairs are drawn from its
digits with replacement (test: 20,000 places, 8,669 distinct digits, one digit in up to 10
pairs), so a pair's accuracy weighs each digit by how often it was drawn: the uses printed are
those of the misread digits. With several models: how many digits every model misreads and how
many any does, and every ensemble of two or more of them scored (the mean of the members'
probabilities).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nn.mnist import modelfile  # noqa: E402
from nn.mnist.params import load_params  # noqa: E402
from stages.evaluate import EvaluateParams  # noqa: E402

SPLITS = ("dev", "test")


def misread(pred: np.ndarray, labels: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The distinct source digits (indices into the split's MNIST digits) whose place in some
    pair got the wrong digit: pair label ab is a at the left (pairs[:, 0]), b at the right."""
    wrong = np.stack([pred // 10 != labels // 10, pred % 10 != labels % 10], axis=1)
    return np.unique(pairs[wrong])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data/mnist100"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"),
                    help="its evaluate section's test-time augmentation scores the pairs")
    args = ap.parse_args()
    tta = load_params(EvaluateParams, "evaluate", args.params)
    data = {s: np.load(args.data / f"{s}.npz") for s in SPLITS}
    probs, misread_by = {}, {s: [] for s in SPLITS}
    for path in args.models:
        net, info = modelfile.load(path)
        for split, z in data.items():
            p = probs[path, split] = modelfile.predict_proba(
                net, z["images"], info.normalization, tta.tta_shift, tta.tta_rotate, tta.tta_scale)
            pred = p.argmax(axis=1)
            digits = misread(pred, z["labels"], z["pairs"])
            misread_by[split].append(set(digits.tolist()))
            uses = np.bincount(z["pairs"].ravel())
            print(f"{path} {split}: {np.mean(pred == z['labels']):.2%} of pairs "
                  f"({int(np.sum(pred != z['labels']))} wrong), {len(digits)} of "
                  f"{len(np.unique(z['pairs']))} digits misread, in {sorted(uses[digits].tolist())} pairs")
    if len(args.models) > 1:
        for split, sets in misread_by.items():
            print(f"{split}: {len(set.intersection(*sets))} digits misread by every model, "
                  f"{len(set.union(*sets))} by any")
    for k in range(2, len(args.models) + 1):
        for members in itertools.combinations(args.models, k):
            accs = [np.mean((sum(probs[m, s] for m in members) / k).argmax(axis=1) == data[s]["labels"])
                    for s in SPLITS]
            print(f"ensemble of {', '.join(str(m) for m in members)}: "
                  + ", ".join(f"{s} {a:.2%}" for s, a in zip(SPLITS, accs)))


if __name__ == "__main__":
    main()
