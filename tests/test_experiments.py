"""DVC experiments on tiny params in a temporary copy of the repo: every epoch in `dvc exp show`
while `dvc exp run` trains (DVCLive), with no wall-clock time in what DVC tracks; and the
experiment queue at -j 2."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dvcrepo import TINY_MODELS, copy_repo, dvc, env_with_venv, fake_download, git_commit, set_params

pytestmark = pytest.mark.slow

LIVE = Path("reports/mlp/live")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("repo"), extra=(".gitignore",))
    set_params(repo, **fake_download(tmp_path_factory, n_train=300, n_test=120), **TINY_MODELS,
               **{"prepare.dev_size": 50})
    dvc(repo, "repro", "train@mlp")
    git_commit(repo)
    return repo


def exp_show(repo: Path) -> list[dict]:
    return json.loads(dvc(repo, "exp", "show", "--json"))


def live_step(repo: Path) -> int | None:
    try:
        return json.loads((repo / LIVE / "metrics.json").read_text()).get("step")
    except (OSError, ValueError):  # not there yet, or being rewritten
        return None


def hold_at_step(run: subprocess.Popen, repo: Path, at_least: int, deadline: float) -> int | None:
    """Stop the run's process group (SIGSTOP) once DVCLive's metrics.json shows `at_least` steps,
    and return the step it shows while held. DVCLive rewrites the file in place each epoch, so
    the stop can land between its truncation and its write: then the run goes on and is held
    again at a later step. None if it ended, or the deadline passed, first (the group is left
    running)."""
    while run.poll() is None and time.monotonic() < deadline:
        if (live_step(repo) or 0) >= at_least:
            os.killpg(run.pid, signal.SIGSTOP)
            time.sleep(0.05)  # a process busy on the other core stops at its next switch
            step = live_step(repo)
            if step is not None:
                return step
            os.killpg(run.pid, signal.SIGCONT)
        time.sleep(0.02)
    return None


def test_dvc_exp_show_has_each_epoch_while_dvc_exp_run_trains(repo):
    epochs = 40
    run = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", "-S", f"mlp.epochs={epochs}"],
                           cwd=repo, env=env_with_venv(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        step, running = hold_at_step(run, repo, 2, deadline=time.monotonic() + 120), []
        if step is not None:  # held mid-run while dvc exp show looks
            try:
                running = [e for b in exp_show(repo) for e in b.get("experiments") or []
                           if (e.get("executor") or {}).get("state") == "running"]
            finally:
                os.killpg(run.pid, signal.SIGCONT)
        out, _ = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, out
    assert step is not None and 2 <= step < epochs, (step, out)
    assert len(running) == 1, running
    shown = running[0]["revs"][0]["data"]["metrics"][LIVE.joinpath("metrics.json").as_posix()]
    assert shown["data"]["step"] == step
    assert set(shown["data"]) == {"step", "loss", "train_acc", "dev_acc", "lr"}

    # Done: DVCLive's record is history.csv's, epoch for epoch, and no file has a time column.
    history = pd.read_csv(repo / "reports" / "mlp" / "history.csv")
    assert history["epoch"].tolist() == list(range(1, epochs + 1))
    for name in ("loss", "train_acc", "dev_acc", "lr"):
        tsv = pd.read_csv(repo / LIVE / "plots" / "metrics" / f"{name}.tsv", sep="\t")
        assert list(tsv.columns) == ["step", name]
        assert tsv["step"].tolist() == history["epoch"].tolist()
        assert tsv[name].to_numpy() == pytest.approx(history[name].to_numpy(), rel=1e-5)
    assert json.loads((repo / LIVE / "metrics.json").read_text())["step"] == epochs

    # DVCLive's files are the stage's outputs (cache: false, as reports/ are): dvc.lock records
    # them, and they hold no wall-clock time: the same params give the same bytes.
    lock = (repo / "dvc.lock").read_text()
    assert "path: reports/mlp/live/metrics.json" in lock and "path: reports/mlp/live/plots" in lock
    before = {p: p.read_bytes() for p in (repo / LIVE).rglob("*") if p.is_file()}
    dvc(repo, "repro", "-f", "train@mlp")
    assert {p: p.read_bytes() for p in (repo / LIVE).rglob("*") if p.is_file()} == before
    assert (repo / "dvc.lock").read_text() == lock


def test_two_queued_experiments_run_at_j2_on_one_thread_each(repo):
    """`dvc exp run --queue` twice, then `NN_THREADS=1 dvc queue start -j 2` (docs/team.md):
    both experiments land in `dvc exp show`, and each job's stages ran on one thread."""
    names = ("q-seed-1", "q-seed-2")
    for i, name in enumerate(names, 1):
        dvc(repo, "exp", "run", "--queue", "-n", name, "-S", "mlp.epochs=2", "-S", f"mlp.seed={i}")
    env = env_with_venv(NN_THREADS="1")
    # the workers it starts outlive it and keep its stdout: not a pipe, or run() waits for them
    subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=repo, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            status = dvc(repo, "queue", "status")
            if not any(word in status for word in ("Queued", "Running")):
                break
            time.sleep(2)
        assert status.count("Success") == 2, status
    finally:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "stop"], cwd=repo, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    shown = {}
    for baseline in exp_show(repo):
        for e in baseline.get("experiments") or []:
            rev = e["revs"][0]
            shown[rev["name"]] = rev["data"]
    for i, name in enumerate(names, 1):
        params = shown[name]["params"]["params.yaml"]["data"]["mlp"]
        assert (params["epochs"], params["seed"]) == (2, i)
        assert shown[name]["metrics"]["reports/mlp/train.json"]["data"]["epochs_run"] == 2
        log = dvc(repo, "queue", "logs", name)
        assert "train@mlp: trained on the fast engine (cpu, 1 thread(s))" in log, log
