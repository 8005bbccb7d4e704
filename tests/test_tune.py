"""nn tune and nn lr-find without DVC: the sampler, the settings, the ranking, the LR finder."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nn import engine
from nn.fast import threads
from nn.lrfind import lr_range_test, suggest
from nn.mnist import dvc_queue, ranking, search_space
from nn.mnist.cli import app
from nn.mnist.params import ParamsError
from nn.optim import SGD, Adam

SPACE = {
    "mlp.optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
    "mlp.layers.3.p": {"uniform": [0.0, 0.5]},
    "mlp.max_shift": {"int_uniform": [0, 3]},
    "mlp.layers.1.out_features": {"choice": [16, 32], "also": ["mlp.layers.4.in_features"]},
}
MLP = [{"type": "Flatten"}, {"type": "Linear", "in_features": 784, "out_features": 32},
       {"type": "ReLU"}, {"type": "Dropout", "p": 0.1},
       {"type": "Linear", "in_features": 32, "out_features": 10}]


def space(**changes):
    return {k: search_space.Distribution.model_validate(v) for k, v in {**SPACE, **changes}.items()}


def test_the_sampler_is_seeded_and_in_range():
    a, b = search_space.sample(space(), 50, seed=3), search_space.sample(space(), 50, seed=3)
    assert a == b and a != search_space.sample(space(), 50, seed=4)
    for t in a:
        assert 1e-4 <= t["mlp.optimizer.lr"] <= 1e-1
        assert 0 <= t["mlp.layers.3.p"] <= 0.5
        assert type(t["mlp.max_shift"]) is int and 0 <= t["mlp.max_shift"] <= 3
        assert t["mlp.layers.1.out_features"] in (16, 32)
        assert t["mlp.layers.4.in_features"] == t["mlp.layers.1.out_features"]
    assert {t["mlp.max_shift"] for t in a} == {0, 1, 2, 3}       # both ends are drawn


def test_log_uniform_is_uniform_in_the_logarithm():
    draws = np.array([t["mlp.optimizer.lr"] for t in search_space.sample(space(), 4000, seed=0)])
    position = (np.log10(draws) + 4) / 3                          # 0 at 1e-4, 1 at 1e-1
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(position, q) - q) < 0.03
    assert (draws < 1e-2).mean() == pytest.approx(2 / 3, abs=0.03)  # a plain uniform: 0.09


@pytest.mark.parametrize("dist, message", [
    ({"uniform": [0.5, 0.1]}, "uniform: low 0.5 must be < high 0.1"),
    ({"log_uniform": [0.0, 1.0]}, "log_uniform: low 0.0 must be > 0"),
    ({"uniform": [0, 1], "choice": [1]}, "give exactly one of"),
    ({"choice": []}, "must list at least 1"),
    ({"normal": [0, 1]}, "normal: unknown key"),
])
def test_a_bad_distribution_names_its_key(tmp_path, dist, message):
    path = write_params(tmp_path, {"mlp.optimizer.lr": dist})
    with pytest.raises(ParamsError, match="tune.mlp.space.mlp.optimizer.lr") as e:
        search_space.load_settings("mlp", path)
    assert message in str(e.value)


def write_params(tmp_path, space, **settings):
    params = {"mlp": {"optimizer": {"name": "adam", "lr": 0.01}, "max_shift": 1, "layers": MLP},
              "tune": {"mlp": {"trials": 2, "space": space, **settings}}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    return tmp_path / "params.yaml"


@pytest.mark.parametrize("key, message", [
    ("mlp.layers.9.p", "mlp.layers.9.p: no such param"),
    ("mlp.layers[3].p", "no such param in"),
    ("mlp.optimizer.momentun", "no such param"),
    ("cnn.optimizer.lr", "must be a param of mlp"),
])
def test_every_path_must_exist_in_params(tmp_path, key, message):
    with pytest.raises(ParamsError, match="tune.mlp.space") as e:
        search_space.load_settings("mlp", write_params(tmp_path, {key: {"uniform": [0, 1]}}))
    assert message in str(e.value)
    with pytest.raises(ParamsError, match="tune.mlp.budget: mlp.epoch: no such param"):
        search_space.load_settings("mlp", write_params(tmp_path, {"mlp.max_shift": {"choice": [1]}},
                                               budget={"mlp.epoch": 1}))


def test_list_items_are_reached_by_index(tmp_path):
    settings, tree = search_space.load_settings("mlp", write_params(tmp_path, SPACE))
    assert search_space.lookup(tree, "mlp.layers.3.p") == 0.1
    assert search_space.set_args({"mlp.layers.3.p": 0.25, "mlp.optimizer.lr": 1e-05, "mlp.clip_norm": None,
                          "mlp.optimizer.nesterov": True}) == [
        "-S", "mlp.layers.3.p=0.25", "-S", "mlp.optimizer.lr=1e-05",
        "-S", "mlp.clip_norm=null", "-S", "mlp.optimizer.nesterov=true"]


def exp(state, dev=None, test=None, log=None):
    metrics = {} if dev is None else {"reports/mlp/train.json": {"dev_acc": dev, "best_epoch": 1},
                                      "reports/mlp/metrics.json": {"accuracy": test}}
    return {"state": state, "metrics": metrics, "log": log}


def test_the_ranking_is_by_dev_accuracy_never_test_and_failures_come_last(tmp_path):
    log = tmp_path / "t.out"
    log.write_text("Running stage 'train@mlp':\ntrain@mlp: error: training diverged: loss became "
                   "nan\nERROR: failed to reproduce 'train@mlp'\n")
    trials = {f"t{i}": {"mlp.optimizer.lr": lr, "mlp.layers.3.p": 0.1, "mlp.max_shift": 1,
                        "mlp.layers.1.out_features": 16} for i, lr in enumerate([1e-3, 1e-2, 1, 1e-4])}
    exps = {"t0": exp("success", dev=0.90, test=0.99),     # best on test, second on dev
            "t1": exp("success", dev=0.95, test=0.80),
            "t2": exp("failed", log=str(log)),
            "t3": exp("success", dev=0.50, test=0.50)}
    exps["t2"]["metrics"] = exps["t3"]["metrics"]          # DVC shows the baseline's for a failure
    table = ranking.results_table("mlp", trials, exps, space())
    assert table["name"].tolist() == ["t1", "t0", "t3", "t2"]
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert table["status"].tolist() == ["ok", "ok", "ok", "failed"]
    assert math.isnan(table["dev_acc"].iloc[3])
    assert table["error"].iloc[3] == "train@mlp: error: training diverged: loss became nan"
    assert "accuracy" not in table.columns and "test" not in " ".join(table.columns)
    assert ranking.most_influential(table, space()) == "mlp.optimizer.lr"


def test_the_most_influential_param_has_the_largest_rank_correlation_in_size():
    import pandas as pd

    table = pd.DataFrame({"status": ["ok"] * 4 + ["failed"], "dev_acc": [0.9, 0.8, 0.7, 0.6, None],
                          "mlp.optimizer.lr": [1e-3] * 4 + [5.0],    # did not vary: counts as 0
                          "mlp.layers.3.p": [0.1, 0.2, 0.3, 0.9, 0.0],  # rho = -1: the largest
                          "mlp.max_shift": [0, 1, 0, 1, 3], "mlp.layers.1.out_features": [16] * 5})
    assert ranking.most_influential(table, space()) == "mlp.layers.3.p"
    assert ranking.most_influential(table.head(2), space()) == "mlp.optimizer.lr"  # too few: first

def test_ctrl_c_removes_the_queued_trials_and_kills_the_running(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(dvc_queue, "experiments", lambda root: {"a": exp("success", 0.5), "b": exp("running"),
                                                           "c": exp("queued")})
    monkeypatch.setattr(dvc_queue, "dvc", lambda root, *args, **kw: calls.append(args) or "")
    dvc_queue.Search(None, "mlp").stop(["a", "b", "c", "d"])
    assert calls == [("queue", "remove", "c"), ("queue", "kill", "b")]   # "d": not queued yet
    assert "1 queued trial(s) removed, 1 running killed" in capsys.readouterr().err


class Clock:
    """time.monotonic and time.sleep for the search's waits, without waiting."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def a_dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_wait_gives_up_on_trials_dvc_will_never_finish(monkeypatch, capsys):
    clock, calls, dead = Clock(), [], a_dead_pid()
    live = {**exp("running"), "pid": os.getpid()}
    monkeypatch.setattr(dvc_queue, "time", clock)
    monkeypatch.setattr(dvc_queue, "dvc", lambda root, *args, **kw: calls.append(args) or "")
    monkeypatch.setattr(dvc_queue, "experiments", lambda root: {       # "lost" is never shown
        "live": live if clock.now < 600 else exp("success", 0.5),
        "dead": {**exp("running"), "pid": dead}, "none": exp("running")})
    exps = dvc_queue.Search(None, "mlp", poll=10).run(["live", "dead", "none", "lost"], workers=2)
    assert exps["live"]["state"] == "success"                     # a long trial is never cut
    assert {n: e["state"] for n, e in exps.items() if n != "live"} == dict.fromkeys(
        ["dead", "none", "lost"], "failed")
    assert exps["dead"]["error"] == f"its process {dead} ended and DVC never recorded a result"
    assert exps["none"]["error"] == "DVC shows it running, but no process runs it"
    assert exps["lost"]["error"].startswith("DVC lost it")
    assert ("queue", "kill", "dead") in calls and ("queue", "kill", "lost") not in calls
    err = capsys.readouterr().err
    assert "tune: dead: its process" in err and "counted as failed" in err


def test_an_orphan_is_given_up_after_orphan_after_seconds_not_before(monkeypatch):
    clock, dead = Clock(), a_dead_pid()
    monkeypatch.setattr(dvc_queue, "time", clock)
    monkeypatch.setattr(dvc_queue, "dvc", lambda root, *args, **kw: "")
    seen = []
    monkeypatch.setattr(dvc_queue, "experiments", lambda root: seen.append(clock.now) or {
        "dead": {**exp("running"), "pid": dead}})
    dvc_queue.Search(None, "mlp", poll=10).run(["dead"], workers=1)
    assert dvc_queue.ORPHAN_AFTER < seen[-1] <= dvc_queue.ORPHAN_AFTER + 10


def test_a_queue_that_never_starts_is_an_error_not_a_hang(monkeypatch):
    clock, calls = Clock(), []
    monkeypatch.setattr(dvc_queue, "time", clock)
    monkeypatch.setattr(dvc_queue, "dvc", lambda root, *args, **kw: calls.append(args) or "")
    monkeypatch.setattr(dvc_queue, "experiments", lambda root: {"a": exp("success", 0.5),
                                                           "b": exp("queued")})
    with pytest.raises(dvc_queue.TuneError, match="has not started a trial in 900 s"):
        dvc_queue.Search(None, "mlp", poll=10).run(["a", "b"], workers=1)
    assert calls.count(("queue", "start", "--jobs", "1")) > 5     # workers were restarted
    assert clock.now <= dvc_queue.STALL_AFTER + 20


def test_a_dvc_command_that_hangs_is_stopped_with_one_line(tmp_path):
    with pytest.raises(dvc_queue.TuneError, match=r"^`python\S* -c import time; time.sleep\(30\) ...` "
                                             r"did not finish in 1 s; it was stopped$"):
        dvc_queue._run(tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)


def test_a_hung_dvc_exp_show_is_stopped_and_tried_again(monkeypatch):
    # DVC can hang for good reading a running experiment that ends meanwhile (see exp_show)
    timeouts = []

    def run(root, args, env=None, timeout=None):
        timeouts.append(timeout)
        if len(timeouts) == 1:
            raise dvc_queue.TuneError("`python -m dvc exp show ...` did not finish in 60 s; it was stopped")
        return subprocess.CompletedProcess(args, 0, "[]", "")

    monkeypatch.setattr(dvc_queue, "time", Clock())
    monkeypatch.setattr(dvc_queue, "_run", run)
    assert dvc_queue.exp_show(Path(".")) == []
    assert timeouts == [dvc_queue.EXP_SHOW_TIMEOUT] * 2 and dvc_queue.EXP_SHOW_TIMEOUT <= 60


def git(repo, *args, env=None):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env)


def test_preflight_says_what_dvc_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))             # no global git identity
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(dvc_queue.TuneError, match="not the root of a DVC project"):
        dvc_queue.preflight(tmp_path)
    git(tmp_path, "init", "-q")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(dvc_queue.TuneError, match="need.* a git commit|start from a git commit"):
        dvc_queue.preflight(tmp_path)
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "x")
    with pytest.raises(dvc_queue.TuneError, match="git's user.name is not set: git config user.name"):
        dvc_queue.preflight(tmp_path)
    git(tmp_path, "config", "user.name", "a")
    git(tmp_path, "config", "user.email", "a@b")
    dvc_queue.preflight(tmp_path)


def test_nn_threads_caps_the_engine_pool(monkeypatch):
    monkeypatch.setenv("NN_THREADS", "1")
    assert threads.thread_count() == 1
    monkeypatch.setenv("NN_THREADS", "999")
    assert threads.thread_count() == dvc_queue.cores()
    monkeypatch.setenv("NN_THREADS", "two")
    with pytest.raises(ValueError, match="NN_THREADS='two'"):
        threads.thread_count()
    env = dvc_queue.thread_env(3)
    assert [env[k] for k in ("NN_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")] == ["3"] * 3


def toy_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.normal(0, 1, (n, 28, 28, 1)).astype(np.float32)
    x[np.arange(n), 2 + 2 * y, :, 0] += 3                  # a learnable row per label
    return x, y


def test_the_lr_finder_rises_exponentially_and_stops_when_the_loss_explodes():
    x, y = toy_data()
    net = engine.build(MLP, np.random.default_rng(0))
    records = lr_range_test(net, SGD(1.0, momentum=0.9), x, y, rng=np.random.default_rng(0),
                            min_lr=1e-4, max_lr=1e4, steps=100, batch_size=32)
    lrs = np.array([r["lr"] for r in records])
    assert lrs[0] == pytest.approx(1e-4) and np.allclose(np.diff(np.log(lrs)), np.log(1e8) / 99)
    assert len(records) < 100                              # lr 1e4 with SGD: it explodes
    smoothed = [r["smoothed"] for r in records]
    assert min(smoothed[:-1]) < smoothed[0] - 0.3          # it learned on the way up
    lr, rule = suggest(records)
    low = min(records[:-1], key=lambda r: r["smoothed"])
    assert lr == pytest.approx(low["lr"] / 10) and "a tenth" in rule
    again = lr_range_test(engine.build(MLP, np.random.default_rng(0)), SGD(1.0, momentum=0.9), x, y,
                          rng=np.random.default_rng(0), min_lr=1e-4, max_lr=1e4, steps=100,
                          batch_size=32)
    assert [r["loss"] for r in again] == [r["loss"] for r in records]


def test_nn_lr_find_writes_csv_png_and_a_suggestion(tmp_path, monkeypatch):
    from nn.files import save_npz

    x, y = toy_data(200)
    save_npz(tmp_path / "data" / "mnist" / "train.npz",
             images=np.clip(x[..., 0] * 40 + 60, 0, 255).astype(np.uint8), labels=y.astype(np.uint8))
    (tmp_path / "dvc.yaml").write_text("vars:\n  - models: {mlp: mnist}\nstages: {}\n")
    (tmp_path / "params.yaml").write_text(json.dumps({"mlp": {
        "seed": 0, "epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01},
        "schedule": {"name": "constant"}, "max_shift": 1, "layers": MLP}}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["lr-find", "mlp", "--steps", "60", "--min-lr", "1e-5",
                                      "--max-lr", "10"])
    assert result.exit_code == 0, result.output
    assert "lr-find: suggested lr" in result.output
    csv = (tmp_path / "reports" / "lr-find" / "mlp.csv").read_text().splitlines()
    assert csv[0] == "step,lr,loss,smoothed" and 2 < len(csv) <= 61
    assert (tmp_path / "reports" / "lr-find" / "mlp.png").read_bytes()[:4] == b"\x89PNG"
    result = CliRunner().invoke(app, ["lr-find", "cnn"])
    assert result.exit_code == 1 and "error: dvc.yaml: no model 'cnn' in vars.models" in result.output


def test_nn_tune_refuses_bad_settings_with_one_line(tmp_path, monkeypatch):
    write_params(tmp_path, {"mlp.layers.7.p": {"uniform": [0, 1]}})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["tune", "mlp"])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: tune.mlp.space: mlp.layers.7.p: no such param in "
                                     "params.yaml (list items by index: mlp.layers.4.p)")
    result = CliRunner().invoke(app, ["tune", "cnn"])
    assert result.exit_code == 1 and "no section 'tune.cnn'" in result.output


def test_the_stages_accept_the_tune_section_they_never_read():
    from nn.mnist.params import known_sections

    assert known_sections(Path(__file__).parents[1] / "params.yaml")[-1] == "tune"
