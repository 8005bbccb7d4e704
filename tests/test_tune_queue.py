"""`nn tune` through a real DVC queue, in a temporary git repo on tiny params."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from nn.mnist import search_space
from nn.mnist.cli import app
from dvcrepo import TINY_MODELS, copy_repo, dvc, fake_download, git_commit, set_params

pytestmark = pytest.mark.slow

SPACE = {"mlp.optimizer.lr": {"log_uniform": [0.001, 0.1]},
         # 17 without `also`: the next Linear still takes 32, so that trial fails
         "mlp.layers.1.out_features": {"choice": [32, 17]}}


def failing_once_seed(trials: int) -> int:
    """A seed whose trials have exactly one bad width (17) among good ones."""
    space = {k: search_space.Distribution.model_validate(v) for k, v in SPACE.items()}
    return next(s for s in range(100) if sum(t["mlp.layers.1.out_features"] == 17
                                             for t in search_space.sample(space, trials, s)) == 1)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    set_params(repo, **fake_download(tmp_path_factory, n_train=2000, n_test=200), **{
        "prepare.dev_size": 200,
        **{k: v for k, v in TINY_MODELS.items() if k.startswith("mlp.")},
        "mlp.epochs": 2,
        "tune.mlp": {"trials": 3, "workers": 2, "seed": failing_once_seed(3),
                     "budget": {"mlp.epochs": 1, "mlp.train_size": 1000}, "space": SPACE},
    })
    dvc(repo, "repro", "evaluate@mlp")
    git_commit(repo)
    for key, value in (("user.name", "test"), ("user.email", "test@example.com")):
        subprocess.run(["git", "config", key, value], cwd=repo, check=True)
    return repo


def exp_show(repo: Path) -> dict[str, dict]:
    out = {}
    for baseline in json.loads(dvc(repo, "exp", "show", "--json")):
        for e in baseline.get("experiments") or []:
            rev = e["revs"][0]
            out[rev["name"]] = rev["data"]
    return out


def test_a_search_then_a_retrain_through_the_dvc_queue(repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = CliRunner().invoke(app, ["tune", "mlp", "--retrain", "--poll", "1"])
    assert result.exit_code == 0, result.output
    seed = failing_once_seed(3)
    names = [f"tune-mlp-{seed}-0{i}" for i in (1, 2, 3)]

    table = pd.read_csv(repo / "reports" / "tune" / "mlp.csv")
    assert sorted(table["name"]) == names                         # every trial is in the table
    assert (repo / "reports" / "tune" / "mlp.png").read_bytes()[:4] == b"\x89PNG"
    bad = table[table["mlp.layers.1.out_features"] == 17]
    assert bad["status"].tolist() == ["failed"] and bad["rank"].tolist() == [3]
    assert bad["error"].iloc[0].startswith(                          # its own reason, one line
        "train@mlp: error: mlp.layers[4] (Linear) cannot take input (17,)")
    ok = table[table["status"] == "ok"]
    assert ok["dev_acc"].tolist() == sorted(ok["dev_acc"], reverse=True)

    shown = exp_show(repo)                                         # real experiments, in DVC
    assert set(names) <= set(shown)
    for _, row in ok.iterrows():
        data = shown[row["name"]]
        assert data["metrics"]["reports/mlp/train.json"]["data"]["dev_acc"] == row["dev_acc"]
        mlp = data["params"]["params.yaml"]["data"]["mlp"]
        assert (mlp["epochs"], mlp["train_size"]) == (1, 1000)  # the trial budget
        assert mlp["optimizer"]["lr"] == row["mlp.optimizer.lr"]

    best = table["name"].iloc[0]
    final = shown[f"tune-mlp-{seed}-best"]                         # the retrain: full budget
    mlp = final["params"]["params.yaml"]["data"]["mlp"]
    assert (mlp["epochs"], mlp["train_size"]) == (2, None)
    assert mlp["optimizer"]["lr"] == table["mlp.optimizer.lr"].iloc[0]
    assert final["metrics"]["reports/mlp/train.json"]["data"]["epochs_run"] == 2
    assert f"tune: best {best}" in result.output
    assert f"dvc exp apply tune-mlp-{seed}-best" in result.output
    assert "test" in result.output and "baseline" in result.output

    again = CliRunner().invoke(app, ["tune", "mlp"])               # names are not reused
    assert again.exit_code == 1 and f"experiment tune-mlp-{seed}-01 exists" in again.output
