"""The real `dvc repro` of the data stages, on tiny params, in a temporary copy of the repo."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dvcrepo import TINY_MODELS, copy_repo, dvc, env_with_venv, fake_download, git_commit, set_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    set_params(repo, **fake_download(tmp_path_factory, n_train=300, n_test=120), **{
        "prepare.dev_size": 50,
        "mnist100.train_size": 400,
        "mnist100.dev_size": 100,
        "mnist100.test_size": 100,
        "mnist100.sample_grid": 4,
    })
    return repo


def test_repro_runs_the_data_stages_then_does_nothing(repo):
    out = dvc(repo, "repro", "synthesize")
    for stage in ("download", "prepare", "synthesize"):
        assert f"Running stage '{stage}'" in out
    for path in ("data/raw/mnist/train-images-idx3-ubyte", "data/mnist/dev.npz",
                 "data/mnist100/test.npz", "reports/mnist100_samples.png"):
        assert (repo / path).is_file(), path
    out = dvc(repo, "repro", "synthesize")
    assert "Running stage" not in out
    assert "Data and pipelines are up to date." in out


def test_changing_a_mnist100_size_reruns_only_synthesize(repo):
    dvc(repo, "repro", "synthesize")
    lock_before = (repo / "dvc.lock").read_text()
    set_params(repo, **{"mnist100.train_size": 500})
    out = dvc(repo, "repro", "synthesize")
    assert "Running stage 'synthesize'" in out
    assert "Running stage 'download'" not in out and "Running stage 'prepare'" not in out
    # Putting the old value back gives back the old bytes: the lock file is as before.
    set_params(repo, **{"mnist100.train_size": 400})
    dvc(repo, "repro", "synthesize")
    assert (repo / "dvc.lock").read_text() == lock_before


def test_a_failing_stage_says_what_dvc_removed_and_dvc_checkout_restores_it(repo):
    """`dvc repro` deletes a stage's outputs before it runs it; the stage's one line says so
    (not "left as they were"), and the command it names brings them back."""
    dvc(repo, "repro", "prepare")
    before = {p.name: p.read_bytes() for p in (repo / "data" / "mnist").iterdir()}
    set_params(repo, **{"prepare.dev_size": 10 ** 6})
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "prepare"], cwd=repo, env=env_with_venv(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    line = next(x for x in proc.stderr.splitlines() if x.startswith("prepare: error: "))
    assert line.startswith("prepare: error: prepare.dev_size: 1,000,000 must be less than "), line
    assert line.endswith("(DVC removed data/mnist/train.npz, data/mnist/dev.npz, "
                         "data/mnist/test.npz before the run; `dvc checkout prepare` restores "
                         "the cached ones (docs/11-pipeline.md))"), line
    assert not (repo / "data" / "mnist").exists()
    set_params(repo, **{"prepare.dev_size": 50})
    dvc(repo, "checkout", "prepare")
    assert {p.name: p.read_bytes() for p in (repo / "data" / "mnist").iterdir()} == before
    assert "changed" not in dvc(repo, "status", "prepare")


def test_a_fresh_copy_gives_identical_output_hashes(repo, tmp_path):
    dvc(repo, "repro", "synthesize")
    other = copy_repo(tmp_path)
    shutil.copy(repo / "params.yaml", other / "params.yaml")
    dvc(other, "repro", "synthesize")
    lock_a = json.dumps(_outs(repo))
    lock_b = json.dumps(_outs(other))
    assert lock_a == lock_b


def _outs(repo: Path) -> dict:
    from ruamel.yaml import YAML

    lock = YAML(typ="safe").load(repo / "dvc.lock")
    return {name: [(o["path"], o["md5"]) for o in stage["outs"]]
            for name, stage in lock["stages"].items()}


def test_the_whole_pipeline_then_an_experiment(repo):
    set_params(repo, **TINY_MODELS)
    out = dvc(repo, "repro")
    for stage in ("train@mlp", "train@cnn", "evaluate@mlp", "evaluate@cnn", "report"):
        assert f"Running stage '{stage}'" in out
    for name in ("mlp", "cnn"):
        for f in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "errors.png",
                  "history.csv"):
            assert (repo / "reports" / name / f).is_file(), (name, f)
        assert (repo / "models" / f"{name}.npz").is_file()
    page = (repo / "reports" / "README.md").read_text()
    assert "| mlp | mnist |" in page and "| cnn | mnist100 |" in page
    metrics = dvc(repo, "metrics", "show")
    assert "reports/mlp/metrics.json" in metrics and "reports/cnn/metrics.json" in metrics
    assert "Data and pipelines are up to date." in dvc(repo, "repro")

    git_commit(repo)
    out = dvc(repo, "exp", "run", "-S", "mlp.epochs=2")
    assert "Running stage 'train@mlp'" in out and "Running stage 'report'" in out
    assert "train@cnn" not in out.replace("Stage 'train@cnn' didn't change", "")
    assert "evaluate@cnn" not in out.replace("Stage 'evaluate@cnn' didn't change", "")

    # A mistyped key: DVC refuses to override it; forced in with "+", our stage refuses it.
    env = env_with_venv()
    for key, message in (("mlp.epoch", "Could not override 'mlp.epoch'"),
                         ("+mlp.epoch", "train@mlp: error: mlp.epoch: unknown key")):
        bad = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-S", f"{key}=3"],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert bad.returncode != 0
        assert message in bad.stdout + bad.stderr
