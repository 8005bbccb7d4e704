"""What the nn tune tests share (test_tune, test_tune_dvc): toy digits a small MLP learns in a
second, a folder of their splits with a params.yaml and its tune section, and a budget slow
enough that a signal lands inside a trial."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import TINY_MLP

TUNE_MLP = {"seed": 0, "epochs": 10, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01},
            "schedule": {"name": "constant"}, "layers": TINY_MLP}
TUNE_SPACE = {"mlp.optimizer.lr": {"log_uniform": [1e-5, 0.1]},
              "mlp.layers.1.out_features": {"choice": [16, 32], "also": ["mlp.layers.4.in_features"]}}
# Trials long enough that a signal sent between two epochs lands inside the trial.
SLOW_BUDGET = {"mlp.epochs": 8, "mlp.layers.1.out_features": 256, "mlp.layers.4.in_features": 256}


def toy_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.normal(0, 1, (n, 28, 28, 1)).astype(np.float32)
    x[np.arange(n), 2 + 2 * y, :, 0] += 3                  # a learnable row per label
    return x, y


def write_tune_folder(folder: Path, space=None, n_train=600, test=True, **settings) -> Path:
    """data/mnist/{train,dev[,test]}.npz of toy digits, a dvc.yaml naming the dataset, and a
    params.yaml with a small MLP and its tune section."""
    from nn.files import save_npz

    for split, n, seed in (("train", n_train, 0), ("dev", 200, 1), ("test", 200, 2)):
        if split == "test" and not test:
            continue
        x, y = toy_data(n, seed)
        save_npz(folder / "data" / "mnist" / f"{split}.npz",
                 images=np.clip(x[..., 0] * 40 + 60, 0, 255).astype(np.uint8),
                 labels=y.astype(np.uint8))
    (folder / "dvc.yaml").write_text("vars:\n  - models: {mlp: mnist}\nstages: {}\n")
    tune = {"trials": 4, "seed": 0, "budget": {"mlp.epochs": 3}, "space": TUNE_SPACE if space is None else space,
            **settings}
    (folder / "params.yaml").write_text(json.dumps({"mlp": TUNE_MLP, "tune": {"mlp": tune}}))
    return folder


def mid_trial(trial) -> bool:
    """Whether a running trial has reported an epoch and has more than one to go."""
    return 1 <= len(trial.intermediate_values) < SLOW_BUDGET["mlp.epochs"] - 1
