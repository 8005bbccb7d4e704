"""`nn tune` with the rest of the world: its trials as DVC experiments in a temporary git+DVC
copy of the repo, and one study shared by two workers through a real PostgreSQL server."""

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from dvcrepo import TINY_MODELS, copy_repo, dvc, fake_download, git_commit, set_params
from nn.mnist.tune.study import open_storage
from tunefakes import SLOW_BUDGET, mid_trial, write_tune_folder

pytestmark = pytest.mark.slow

SPACE = {"mlp.optimizer.lr": {"log_uniform": [0.001, 0.1]}}


def nn_tune(folder: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nn.mnist.cli", "tune", "mlp", *args],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def finished(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    return out, err


def test_every_trial_is_a_dvc_experiment(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    set_params(repo, **fake_download(tmp_path_factory, n_train=300, n_test=120), **{
        "prepare.dev_size": 50, "mnist100.train_size": 400, "mnist100.dev_size": 100,
        "mnist100.test_size": 100, "mnist100.sample_grid": 4, **TINY_MODELS,
        "tune.mlp": {"trials": 3, "workers": 2, "seed": 0, "budget": {"mlp.epochs": 2},
                     "space": SPACE}})
    dvc(repo, "repro")  # DVC saves the whole workspace: every output must be there
    git_commit(repo)
    for key, value in (("user.name", "test"), ("user.email", "test@example.com")):
        subprocess.run(["git", "config", key, value], cwd=repo, check=True)
    lock = (repo / "dvc.lock").read_text()
    out, err = finished(nn_tune(repo, "--heartbeat", "1"))  # two workers, one lock on DVC
    assert "warning" not in out + err, out + err

    table = pd.read_csv(repo / "reports" / "tune" / "mlp.csv")
    exps = {}
    for baseline in json.loads(dvc(repo, "exp", "show", "--json")):
        for e in baseline.get("experiments") or []:
            rev = e["revs"][0]
            exps[rev["name"]] = rev["data"]
    assert set(exps) == {f"tune-mlp-{n:03d}" for n in table["number"]}, exps.keys()
    for _, row in table.iterrows():
        data = exps[f"tune-mlp-{row['number']:03d}"]
        params = data["params"][".nn-tune/live/params.yaml"]["data"]
        metrics = data["metrics"][".nn-tune/live/metrics.json"]["data"]
        assert params["mlp.optimizer.lr"] == pytest.approx(row["mlp.optimizer.lr"], rel=1e-5)
        assert params["mlp.epochs"] == 2
        assert metrics["state"] == row["state"]
        assert metrics["dev_acc"] == pytest.approx(row["dev_acc"], abs=1e-6)
        assert metrics.get("step", 0) == row["epochs"]  # one DVCLive step per epoch run
    diff = dvc(repo, "exp", "diff", "--all", "tune-mlp-000", "tune-mlp-001")
    assert "mlp.optimizer.lr" in diff and "dev_acc" in diff
    assert (repo / "dvc.lock").read_text() == lock  # the workspace is as it was


# -- PostgreSQL: its own cluster in a temporary folder, on a free loopback port ------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """postgresql://postgres@127.0.0.1:PORT/postgres of a throwaway cluster, stopped after."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[team]'")
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    # PostgreSQL refuses to run as root: as root, the cluster belongs to `nobody`
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: PostgreSQL cannot be started as root")
    folder = Path(tempfile.mkdtemp(prefix="nn-tune-pg-"))  # in /tmp, which nobody can reach
    if as_user:
        shutil.chown(folder, "nobody")
    port, data = free_port(), folder / "data"
    init = subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"],
                          capture_output=True, text=True)
    if init.returncode != 0:
        shutil.rmtree(folder)
        pytest.skip(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1]}")
    start = subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w",
                            "-o", f"-p {port} -k {folder} -h 127.0.0.1", "start"],
                           capture_output=True, text=True)
    assert start.returncode == 0, start.stdout + start.stderr + (folder / "log").read_text()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def trials(url: str, study: str = "tune-mlp"):
    import optuna

    # open_storage: it waits out a worker that is creating the tables at the same time
    return optuna.load_study(study_name=study, storage=open_storage(url, heartbeat=1)).get_trials(
        deepcopy=False)


def test_two_workers_share_one_postgresql_study_and_survive_a_killed_one(postgres, tmp_path):
    folder = write_tune_folder(tmp_path, n_train=4000, trials=10, budget=SLOW_BUDGET)
    args = ["--no-exp", "--storage", postgres, "--heartbeat", "1"]
    a = nn_tune(folder, *args, "--out", "reports/a")
    deadline = time.monotonic() + 120
    while a.poll() is None and time.monotonic() < deadline:  # the first worker makes the study
        time.sleep(0.2)
        with contextlib.suppress(KeyError):  # no study yet
            if trials(postgres):
                break
    assert a.poll() is None, a.communicate()
    b = nn_tune(folder, *args, "--seed", "1", "--out", "reports/b")  # another machine: own seed
    victim = None
    while victim is None and b.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        victim = next((t for t in trials(postgres) if t.state.name == "RUNNING" and mid_trial(t)
                       and t.user_attrs.get("worker", "").endswith(f":{b.pid}")), None)
    assert victim, "worker b never ran a trial"
    b.send_signal(signal.SIGKILL)
    b.wait()
    finished(a)  # the other worker goes on: b's trial failed by its heartbeat, and replaced
    final = {t.number: t for t in trials(postgres)}
    failed = [t for t in final.values() if t.state.name == "FAIL"]
    # b's trial: the one seen running, or the next, where that one ended just before the kill
    assert len(failed) == 1 and failed[0].number >= victim.number
    assert failed[0].user_attrs["worker"].endswith(f":{b.pid}")
    assert sorted(final) == list(range(len(final)))          # one numbering, no gaps
    states = [t.state.name for t in final.values()]
    assert states.count("FAIL") == 1 and states.count("RUNNING") == 0
    assert states.count("COMPLETE") + states.count("PRUNED") == 10
    by = {t.user_attrs["worker"].rpartition(":")[2] for t in final.values()}
    assert {str(a.pid), str(b.pid)} <= by                      # both workers' trials landed
    params = [t.params["mlp.optimizer.lr"] for t in final.values() if t.state.name != "FAIL"]
    assert len(set(params)) == len(params) == 10                # none run twice
    table = pd.read_csv(folder / "reports" / "a" / "mlp.csv")
    assert len(table) == len(final) and table.loc[failed[0].number, "state"] == "fail"
