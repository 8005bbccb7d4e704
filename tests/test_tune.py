"""nn tune on Optuna (in-process trials, pruning, the study's storage, reports, bad input)
and nn lr-find; tests/test_tune_dvc.py has the trials as DVC experiments and PostgreSQL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_MLP
from nn import engine
from nn.fast import threads
from nn.lrfind import lr_range_test, suggest
from nn.mnist import search_space
from nn.mnist.cli import app
from nn.mnist.params import ParamsError
from nn.mnist.tune.study import open_storage
from nn.optim import SGD
from tunefakes import SLOW_BUDGET, mid_trial, toy_data, write_tune_folder

SPACE = {
    "mlp.optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
    "mlp.layers.3.p": {"uniform": [0.0, 0.5]},
    "mlp.max_shift": {"int_uniform": [0, 3]},
    "mlp.layers.1.out_features": {"choice": [16, 32], "also": ["mlp.layers.4.in_features"]},
}


def space(**changes):
    return {k: search_space.Distribution.model_validate(v) for k, v in {**SPACE, **changes}.items()}


def test_each_kind_is_asked_of_optuna_with_its_range_and_also_paths_follow():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        values = {path: d.suggest(trial, path) for path, d in space().items()}
        study.tell(trial, 0.0)
        assert 1e-4 <= values["mlp.optimizer.lr"] <= 1e-1
        assert 0 <= values["mlp.layers.3.p"] <= 0.5
        assert type(values["mlp.max_shift"]) is int and 0 <= values["mlp.max_shift"] <= 3
        full = search_space.expand(space(), values)
        assert full["mlp.layers.4.in_features"] == full["mlp.layers.1.out_features"] in (16, 32)
    dists = study.trials[0].distributions
    assert dists["mlp.optimizer.lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["mlp.layers.3.p"] == optuna.distributions.FloatDistribution(0.0, 0.5)
    assert dists["mlp.max_shift"] == optuna.distributions.IntDistribution(0, 3)
    assert dists["mlp.layers.1.out_features"] == optuna.distributions.CategoricalDistribution((16, 32))
    lrs = np.log10([t.params["mlp.optimizer.lr"] for t in study.trials])
    assert (lrs < -2.5).mean() > 0.25                     # log-uniform: a plain uniform gives 0.03


@pytest.mark.parametrize("dist, message", [
    ({"uniform": [0.5, 0.1]}, "uniform: low 0.5 must be < high 0.1"),
    ({"log_uniform": [0.0, 1.0]}, "log_uniform: low 0.0 must be > 0"),
    ({"uniform": [0, 1], "choice": [1]}, "give exactly one of"),
    ({"uniform": [0.2, 0.2]}, "uniform: low 0.2 must be < high 0.2"),
    ({"int_uniform": [3, 1]}, "int_uniform: low 3 must be < high 1"),
    ({"choice": []}, "must list at least 1"),
    ({"choice": [[1, 2]]}, "choice: each value must be"),
    ({"normal": [0, 1]}, "normal: unknown key"),
])
def test_a_bad_distribution_names_its_key(tmp_path, dist, message):
    path = write_params(tmp_path, {"mlp.optimizer.lr": dist})
    with pytest.raises(ParamsError, match="tune.mlp.space.mlp.optimizer.lr") as e:
        search_space.load_settings("mlp", path)
    assert message in str(e.value)


def write_params(tmp_path, space, **settings):
    params = {"mlp": {"optimizer": {"name": "adam", "lr": 0.01}, "max_shift": 1, "layers": TINY_MLP},
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


def test_list_items_are_reached_by_index_and_set_on_a_copy(tmp_path):
    settings, tree = search_space.load_settings("mlp", write_params(tmp_path, SPACE))
    assert search_space.lookup(tree, "mlp.layers.3.p") == 0.1
    changed = search_space.with_values(tree, {"mlp.layers.3.p": 0.25, "mlp.optimizer.lr": 1e-5})
    assert changed["mlp"]["layers"][3]["p"] == 0.25 and changed["mlp"]["optimizer"]["lr"] == 1e-5
    assert tree["mlp"]["layers"][3]["p"] == 0.1


def test_the_lr_finder_rises_exponentially_and_stops_when_the_loss_explodes():
    x, y = toy_data()
    net = engine.build(TINY_MLP, np.random.default_rng(0))
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
    again = lr_range_test(engine.build(TINY_MLP, np.random.default_rng(0)), SGD(1.0, momentum=0.9), x, y,
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
        "schedule": {"name": "constant"}, "max_shift": 1, "layers": TINY_MLP}}))
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


def test_nn_threads_caps_the_engine_pool(monkeypatch):
    monkeypatch.setenv("NN_THREADS", "1")
    assert threads.thread_count() == 1
    monkeypatch.setenv("NN_THREADS", "999")
    assert threads.thread_count() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("NN_THREADS", "two")
    with pytest.raises(ValueError, match="NN_THREADS='two'"):
        threads.thread_count()


# -- nn tune end to end, on toy data in a folder of its own (no DVC experiments: --no-exp) ------


def nn_tune(folder: Path, *args: str):
    old = Path.cwd()
    os.chdir(folder)
    try:
        return CliRunner().invoke(app, ["tune", "mlp", "--no-exp", "--heartbeat", "1", *args])
    finally:
        os.chdir(old)


def reports(folder: Path) -> list[str]:
    found = folder / "reports" / "tune"
    return sorted(p.name for p in found.iterdir()) if found.is_dir() else []


@pytest.mark.slow
def test_a_search_prunes_ranks_by_dev_never_test_and_writes_its_reports(tmp_path):
    folder = write_tune_folder(tmp_path, test=False)  # no test split: the search never reads it
    result = nn_tune(folder, "--trials", "10")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(folder / "reports" / "tune" / "mlp.csv")
    assert list(table.columns[:5]) == ["number", "state", "dev_acc", "best_epoch", "epochs"]
    assert list(table["number"]) == list(range(10)) and set(table["worker"]) == {1}
    assert list(table["defaults"]) == [True] + [False] * 9      # trial 0: params.yaml's values
    assert table.loc[0, "mlp.optimizer.lr"] == 0.01 and table.loc[0, "mlp.layers.1.out_features"] == 32
    assert set(table["state"]) == {"complete", "pruned"}      # the pruner stopped some trials
    pruned = table[table["state"] == "pruned"]
    assert (pruned["epochs"] < 3).all() and (table[table["state"] == "complete"]["epochs"] == 3).all()
    best = table.loc[table[table["state"] == "complete"]["dev_acc"].idxmax()]
    assert f"tune: best trial {best['number']}: dev {best['dev_acc']:.4f}" in result.output
    assert table["mlp.optimizer.lr"].between(1e-5, 0.1).all()
    assert reports(folder) == ["mlp-history.png", "mlp-importance.png", "mlp.csv"]
    assert f"{len(pruned)} pruned" in result.output and "pruning saved about" in result.output

    # the same command goes on with the same study: more trials, none proposed twice
    result = nn_tune(folder, "--trials", "12")
    assert result.exit_code == 0, result.output
    assert "10 of 12 trials there" in result.output
    table = pd.read_csv(folder / "reports" / "tune" / "mlp.csv")
    assert len(table) == 12 and not table.duplicated(["mlp.optimizer.lr"]).any()

    result = nn_tune(folder, "--trials", "13", "--retrain")  # test.npz is needed: said first
    assert result.exit_code == 1
    assert result.output.strip() == "error: data/mnist/test.npz: no such file"
    assert len(pd.read_csv(folder / "reports" / "tune" / "mlp.csv")) == 12


@pytest.mark.slow
def test_retrain_scores_the_best_at_the_full_budget_on_dev_and_test(tmp_path):
    folder = write_tune_folder(tmp_path)
    result = nn_tune(folder, "--trials", "3", "--retrain")
    assert result.exit_code == 0, result.output
    assert "retraining trial" in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("tune: retrained: "))
    assert "dev " in line and "test " in line and "(defaults: dev -, test -)" in line


@pytest.mark.parametrize("change, message", [
    ({"space": {"mlp.layers.7.p": {"uniform": [0, 1]}}},
     "error: tune.mlp.space: mlp.layers.7.p: no such param in params.yaml (list items by "
     "index: mlp.layers.4.p)"),
    ({"space": {"mlp.optimizer.lr": {"log_uniform": [0.1, 0.001]}}},
     "error: tune.mlp.space.mlp.optimizer.lr: log_uniform: low 0.1 must be < high 0.001"),
    ({"space": {"mlp.optimizer.lr": {"uniform": [0.1, 0.1]}}},
     "error: tune.mlp.space.mlp.optimizer.lr: uniform: low 0.1 must be < high 0.1"),
    ({"space": {}}, "error: tune.mlp.space: must list at least 1 item(s)"),
])
def test_a_bad_space_stops_with_one_line_and_writes_nothing(tmp_path, change, message):
    folder = write_tune_folder(tmp_path, **change)
    result = nn_tune(folder)
    assert result.exit_code == 1 and result.output.strip() == message
    assert reports(folder) == [] and not (folder / ".nn-tune").exists()


@pytest.mark.parametrize("url, message", [
    ("postgresql://nobody@127.0.0.1:1/none", "error: storage postgresql://nobody@127.0.0.1:1/none: "),
    ("nosuchdb://x", "error: storage nosuchdb://x: Can't load plugin: sqlalchemy.dialects:nosuchdb"),
    ("not a url", "error: storage not a url: Could not parse SQLAlchemy URL"),
])
def test_a_bad_or_unreachable_storage_stops_with_one_line(tmp_path, url, message):
    result = nn_tune(write_tune_folder(tmp_path), "--storage", url)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(message), result.output
    assert reports(tmp_path) == []


@pytest.mark.slow
def test_a_study_that_holds_another_search_is_refused(tmp_path):
    folder = write_tune_folder(tmp_path)
    assert nn_tune(folder, "--trials", "1").exit_code == 0
    before = (folder / "reports" / "tune" / "mlp.csv").read_bytes()
    write_tune_folder(tmp_path, space={"mlp.optimizer.lr": {"log_uniform": [1e-4, 0.1]}})
    result = nn_tune(folder, "--trials", "2")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: study 'tune-mlp' in sqlite:///.nn-tune/studies.db holds another search (model, "
        "budget or space differ): pick another --study, or delete it (optuna delete-study "
        "--study-name tune-mlp --storage URL)")
    assert (folder / "reports" / "tune" / "mlp.csv").read_bytes() == before
    assert nn_tune(folder, "--trials", "1", "--study", "other").exit_code == 0


def trials_of(folder: Path, study: str = "tune-mlp"):
    import optuna

    if not (folder / ".nn-tune" / "studies.db").exists():
        raise KeyError(study)
    storage = open_storage(f"sqlite:///{folder}/.nn-tune/studies.db", heartbeat=1)
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_a_killed_worker_fails_its_trial_and_the_command_says_so(tmp_path):
    import psutil

    folder = write_tune_folder(tmp_path, n_train=4000, trials=4, budget=SLOW_BUDGET)
    proc = subprocess.Popen([sys.executable, "-m", "nn.mnist.cli", "tune", "mlp", "--no-exp",
                             "--workers", "2", "--heartbeat", "1"], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
        workers = {p.pid: p for p in psutil.Process(proc.pid).children()}
        try:
            trials = trials_of(folder)
        except KeyError:  # no study yet
            continue
        for t in trials:
            pid = int(t.user_attrs.get("worker", ":0").rpartition(":")[2])
            if t.state.name == "RUNNING" and pid in workers and mid_trial(t):
                victim = (t.number, pid)
                workers[pid].send_signal(signal.SIGKILL)
                break
    out, err = proc.communicate(timeout=300)
    assert victim, out + err
    assert proc.returncode == 1, out + err
    assert err.strip().splitlines()[-1].startswith("error: worker ") and \
        "stopped (killed by SIGKILL); its trial is failed, the study is consistent: run the " \
        "same command to go on" in err, err
    final = trials_of(folder)
    failed = [t for t in final if t.state.name == "FAIL"]
    # the killed worker's trial: the one seen running, or, where that one ended (pruned) in the
    # instant before the signal landed, the next it began
    assert len(failed) == 1 and failed[0].number >= victim[0], [t.state for t in final]
    assert failed[0].user_attrs["worker"].endswith(f":{victim[1]}")
    assert "RUNNING" not in {t.state.name for t in final}
    table = pd.read_csv(folder / "reports" / "tune" / "mlp.csv")   # written, and whole
    assert len(table) == len(final) and table.loc[failed[0].number, "state"] == "fail"
    assert f"tune: trial {failed[0].number} " not in out  # the killed worker never finished it


def results_row(table: pd.DataFrame, model: str) -> str:
    """docs/tuning.md's row of a committed search, from its reports/tune/MODEL.csv."""
    done = table[table["state"] == "complete"]
    best = done.loc[done["dev_acc"].idxmax()]
    defaults = table[table["defaults"]].iloc[0]
    counts = " / ".join(str((table["state"] == s).sum()) for s in ("complete", "pruned", "fail"))
    return (f"| {model} | {len(table)} | {counts} | {defaults['dev_acc']:.2%} | "
            f"{best['dev_acc']:.2%} (trial {best['number']}) |")


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_committed_searches_are_the_ones_docs_tuning_describes(model):
    root = Path(__file__).parents[1]
    table = pd.read_csv(root / "reports" / "tune" / f"{model}.csv")
    assert len(table) >= 16 and (table["state"] == "pruned").any()   # a real search, pruning on
    settings, _ = search_space.load_settings(model, root / "params.yaml")
    assert [c for c in table.columns if c.startswith(f"{model}.")] == list(settings.space)
    assert results_row(table, model) in (root / "docs" / "tuning.md").read_text()


@pytest.mark.slow
def test_ctrl_c_keeps_the_study_and_the_same_command_goes_on(tmp_path):
    # 20,000 images: an epoch of trial 1 takes long enough on an idle machine to be caught
    folder = write_tune_folder(tmp_path, n_train=20000, trials=4, budget=SLOW_BUDGET)
    command = [sys.executable, "-m", "nn.mnist.cli", "tune", "mlp", "--no-exp"]
    proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
        try:
            if any(t.state.name == "RUNNING" and t.number == 1 and mid_trial(t)
                   for t in trials_of(folder)):
                break
        except KeyError:  # no study yet
            pass
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert err.strip() == "error: interrupted; the study is kept: the same command goes on"
    assert [t.state.name for t in trials_of(folder)] == ["COMPLETE", "FAIL"]
    assert reports(folder) == []                           # nothing half-written
    again = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 of 4 trials there" in again.stdout
    table = pd.read_csv(folder / "reports" / "tune" / "mlp.csv")
    assert list(table["state"]).count("fail") == 1 and len(table) == 5


# -- a search that cannot work stops itself; the exit status says what happened --------------

WIDTH = "mlp.layers.1.out_features"


@pytest.mark.parametrize("change, message", [
    ({"space": {WIDTH: {"choice": [0, -5], "also": ["mlp.layers.4.in_features"]}}},
     f"error: tune.mlp.space.{WIDTH}: the value 0 fails: mlp.layers[1] (Linear): out_features "
     "must be a positive int, got 0"),
    ({"space": {WIDTH: {"choice": [256, "wide", 1024], "also": ["mlp.layers.4.in_features"]}}},
     f"error: tune.mlp.space.{WIDTH}: the value 'wide' fails: mlp.layers[1] (Linear): "
     "out_features must be a positive int, got 'wide'"),
    ({"space": {"mlp.optimizer.lr": {"uniform": [-1.0, -0.5]}}},
     "error: tune.mlp.space.mlp.optimizer.lr: the value -1.0 fails: mlp.optimizer.lr: -1.0 must "
     "be > 0"),
    ({"space": {"mlp.layers.3.p": {"uniform": [0.5, 1.5]}}},   # the high end only is bad
     "error: tune.mlp.space.mlp.layers.3.p: the value 1.5 fails: mlp.layers[3].p: 1.5 must be "
     "in [0, 1)"),
    ({"budget": {"mlp.epochs": -2}}, "error: tune.mlp.budget: mlp.epochs: -2 must be >= 1"),
])
def test_a_space_or_budget_that_can_give_a_bad_value_stops_before_any_trial(tmp_path, change,
                                                                            message):
    folder = write_tune_folder(tmp_path, n_train=100, **change)
    result = nn_tune(folder, "--trials", "2")
    assert result.exit_code == 1 and result.output.strip() == message, result.output
    assert reports(folder) == [] and not (folder / ".nn-tune").exists()


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_a_search_whose_trials_keep_failing_stops_itself_with_the_first_failure(tmp_path, workers):
    # every value is a valid learning rate, and every trial diverges
    folder = write_tune_folder(tmp_path, n_train=200, budget={"mlp.epochs": 1},
                               space={"mlp.optimizer.lr": {"log_uniform": [1e3, 1e4]}})
    result = nn_tune(folder, "--trials", "50", "--workers", workers)
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: the search stopped after 3 trials failed in a row; the "
                           "first failure: trial 0: training diverged: loss became "), last
    assert "Traceback" not in result.output
    table = pd.read_csv(folder / "reports" / "tune" / "mlp.csv")  # the reports say it, whole
    assert set(table["state"]) == {"fail"} and 3 <= len(table) <= 3 * int(workers)
    assert table["error"].str.startswith("training diverged").all()


def test_failed_trials_of_a_search_that_finished_show_in_its_exit_status(tmp_path):
    folder = write_tune_folder(tmp_path, n_train=200, budget={"mlp.epochs": 1},
                               space={"mlp.optimizer.lr": {"choice": [0.01, 1e4]}})
    result = nn_tune(folder, "--trials", "4")
    assert result.exit_code == 3, result.output
    table = pd.read_csv(folder / "reports" / "tune" / "mlp.csv")
    failed = table[table["state"] == "fail"]
    assert len(failed) and (table["state"] != "fail").sum() == 4
    assert result.output.strip().splitlines()[-1] == (
        f"error: {len(failed)} trial(s) of this run failed (not counted, replaced); the first, "
        f"trial {failed['number'].iloc[0]}: {failed['error'].iloc[0]}")
    assert nn_tune(folder, "--trials", "4").exit_code == 0   # a run with no failure: 0


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # a trial told by hand, not run
def test_the_defaults_trial_is_run_again_until_it_completes(tmp_path, monkeypatch):
    """Ctrl-C during trial 0 fails it (Optuna's doing); the next command queues it again."""
    import optuna

    from nn.mnist.tune.search import make_job
    from nn.mnist.tune.study import open_study

    folder = write_tune_folder(tmp_path, n_train=200, budget={"mlp.epochs": 1})
    monkeypatch.chdir(folder)
    job, settings, tree = make_job("mlp", Path("params.yaml"), Path("data/mnist"),
                                   storage=None, study=None, trials=3, seed=None,
                                   heartbeat=1, experiments=False)
    study = open_study(job, settings, tree, queue_defaults=True)
    trial = study.ask()                                      # trial 0, the defaults'
    assert trial.user_attrs["defaults"]
    study.tell(trial, state=optuna.trial.TrialState.FAIL)    # as an interrupted trial ends
    result = nn_tune(folder, "--trials", "3")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(folder / "reports" / "tune" / "mlp.csv")
    assert list(table["defaults"]) == [True, True, False, False]
    assert list(table["state"])[:2] == ["fail", "complete"]
    assert table.loc[1, "mlp.optimizer.lr"] == 0.01 and table.loc[1, WIDTH] == 32
    again = nn_tune(folder, "--trials", "4")                 # completed once: not queued again
    table = pd.read_csv(folder / "reports" / "tune" / "mlp.csv")
    assert again.exit_code == 0 and list(table["defaults"]) == [True, True, False, False, False]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_the_defaults_trial_runs_again_in_a_study_that_is_full(tmp_path, monkeypatch):
    import optuna

    from nn.mnist.tune.search import make_job
    from nn.mnist.tune.study import open_study

    folder = write_tune_folder(tmp_path, n_train=200, budget={"mlp.epochs": 1})
    monkeypatch.chdir(folder)
    job, settings, tree = make_job("mlp", Path("params.yaml"), Path("data/mnist"),
                                   storage=None, study=None, trials=2, seed=None,
                                   heartbeat=1, experiments=False)
    study = open_study(job, settings, tree, queue_defaults=True)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)   # the defaults', interrupted
    for _ in range(2):                                            # then the study filled up
        study.tell(study.ask(), 0.5)
    result = nn_tune(folder, "--trials", "2")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(folder / "reports" / "tune" / "mlp.csv")
    assert list(table["defaults"]) == [True, False, False, True]
    assert list(table["state"]) == ["fail", "complete", "complete", "complete"]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:",
                                 "sqlite:///file:x?mode=memory&uri=true"])
def test_a_storage_in_memory_is_refused_in_one_line(tmp_path, url):
    result = nn_tune(write_tune_folder(tmp_path, n_train=100), "--storage", url)
    assert result.exit_code == 1 and result.output.strip() == (
        f"error: storage {url}: an in-memory database lives and dies with one process (and its "
        "connection), so a study there cannot be resumed or shared: give a file, e.g. "
        "sqlite:///.nn-tune/studies.db")
    assert reports(tmp_path) == []


def test_a_missing_postgresql_driver_names_the_team_extra(tmp_path, monkeypatch):
    for module in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, module, None)       # as if not installed
    result = nn_tune(write_tune_folder(tmp_path, n_train=100), "--storage",
                     "postgresql://someone:secret@127.0.0.1:1/db")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("error: storage postgresql://someone:***@127.0.0.1:1/db: its "
                                    "database driver is not installed (")
    assert result.output.strip().endswith("(pip install -e '.[team]' installs it)")


def test_the_defaults_trial_is_never_pruned():
    import optuna

    from nn.mnist.tune.workers import epoch_reports

    class Trial:  # a pruner that would stop any trial at once
        def __init__(self, defaults):
            self.user_attrs = {"defaults": True} if defaults else {}

        def report(self, value, step):
            pass

        def should_prune(self):
            return True

    epoch_reports(Trial(defaults=True))({"dev_acc": 0.1, "epoch": 1})   # runs its budget
    with pytest.raises(optuna.TrialPruned):
        epoch_reports(Trial(defaults=False))({"dev_acc": 0.1, "epoch": 1})
