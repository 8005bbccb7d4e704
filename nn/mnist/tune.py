"""`nn tune`: an Optuna search over MODEL's params, each trial trained in this process by
`train_model` and pruned from its per-epoch dev accuracy, every trial a DVC experiment.

The study lives in Optuna's storage (a SQLite file by default, PostgreSQL for many machines),
so any number of worker processes, here or elsewhere, share it, and the same command resumes
it after Ctrl-C. A heartbeat marks the trial of a killed worker failed. Trials are ranked by
dev accuracy only; the test split is read by the `--retrain` alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nn.mnist.search_space import (SearchSettings, check_values, expand, load_settings, lookup,
                                   with_values)

DEFAULT_STORAGE = "sqlite:///.nn-tune/studies.db"  # .nn-tune/ is in .gitignore
LIVE = Path(".nn-tune/live")   # DVCLive's files of the trial being saved as an experiment
COUNTED = ("COMPLETE", "PRUNED", "RUNNING")  # toward --trials: not failed ones, nor one queued
STOP_AFTER = 3  # trials of a worker failed in a row that stop the search: it cannot go on
EXIT_STOPPED = 3  # a worker process's exit status when it stopped so (python -m nn.mnist.tune)


class TuneError(RuntimeError):
    """The search cannot start or go on (storage, study, data); one line."""


class SearchStopped(TuneError):
    """A worker stopped after STOP_AFTER failed trials in a row; the caller words the line."""


@dataclass(frozen=True)
class Job:
    """What each worker process needs: plain values, so that it can be spawned."""

    model: str
    params: Path
    data: Path
    storage: str
    study: str
    trials: int
    seed: int
    heartbeat: float
    experiments: bool


def open_storage(url: str, heartbeat: float):
    """Optuna's RDB storage at `url` with a heartbeat every `heartbeat` s (a trial silent for
    3 heartbeats is failed), or TuneError with the reason in one line."""
    import warnings

    import optuna
    import sqlalchemy.exc

    # the heartbeat has been "experimental" since Optuna 2.9; it is what fails a killed trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if in_memory(url):
        raise TuneError(f"storage {url}: an in-memory database lives and dies with one process "
                        f"(and its connection), so a study there cannot be resumed or shared: "
                        f"give a file, e.g. {DEFAULT_STORAGE}")
    engine_kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # workers wait for each other's writes
    elif url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=max(1, round(heartbeat)),
                                              grace_period=max(3, round(3 * heartbeat)))
        except ImportError as e:  # Optuna's "Please install appropriate one", from the driver's
            missing = e.__cause__ if isinstance(e.__cause__, ImportError) else e
            extra = " (pip install -e '.[team]' installs it)" if url.startswith("postgresql") else ""
            raise TuneError(f"storage {safe_url(url)}: its database driver is not installed "
                            f"({missing}){extra}") from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            # two workers creating the tables of a new database at once: one of them loses
            if "already exists" not in str(e) or attempt == 2:
                raise TuneError(f"storage {safe_url(url)}: {reason}") from None
            time.sleep(1)


def in_memory(url: str) -> bool:
    """Whether `url` is an SQLite database in memory (sqlite://, sqlite:///:memory:, ...)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError:
        return False  # not a URL: open_storage says so
    return u.get_backend_name() == "sqlite" and (
        u.database in (None, "", ":memory:") or u.query.get("mode") == "memory")


def safe_url(url: str) -> str:
    """The storage URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):
        return make_url(url).render_as_string(hide_password=True)
    return url.split("@")[-1]


def open_study(job: Job, settings: SearchSettings, tree: dict, worker: int = 0, *,
               queue_defaults: bool = False):
    """The study named job.study, created or joined; TuneError if it holds another search.
    Its first trial is params.yaml's own values (where the space holds them), so that the
    search is measured against the defaults at the same budget; the command, before any
    worker starts (`queue_defaults`), queues it again until it has completed (a Ctrl-C or a
    dead worker fails it), and it is never pruned.

    Its sampler is seeded from job.seed, the worker's index and the trials the study holds
    already: a fresh single-worker search is reproducible, and neither a resumed search nor a
    second worker proposes the first one's trials again.
    """
    import numpy as np
    import optuna

    storage = open_storage(job.storage, job.heartbeat)
    held = 0
    with contextlib.suppress(KeyError):
        held = len(storage.get_all_trials(storage.get_study_id_from_name(job.study), deepcopy=False))
    seed = int(np.random.SeedSequence([job.seed, worker, held]).generate_state(1)[0])
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(storage=storage, study_name=job.study, direction="maximize",
                                sampler=sampler, pruner=optuna.pruners.MedianPruner(
                                    n_startup_trials=4, n_warmup_steps=0), load_if_exists=True)
    signature = settings.signature(job.model)
    found = study.user_attrs.get("search")
    if found is None:
        study.set_user_attr("search", signature)
    elif found != signature:
        raise TuneError(f"study {job.study!r} in {safe_url(job.storage)} holds another search "
                        f"(model, budget or space differ): pick another --study, or delete it "
                        f"(optuna delete-study --study-name {job.study} --storage URL)")
    defaults = {path: lookup(tree, path) for path in settings.space}
    if queue_defaults and all(d.holds(defaults[path]) for path, d in settings.space.items()):
        alive = ("COMPLETE", "WAITING", "RUNNING")  # done, or on its way
        if not any(t.user_attrs.get("defaults") and t.state.name in alive
                   for t in study.get_trials(deepcopy=False)):
            study.enqueue_trial(defaults, user_attrs={"defaults": True})
    return study


def epoch_reports(trial):
    """An `on_epoch` for train_model: report each epoch's dev accuracy to `trial` and stop the
    run once the pruner says so (never the defaults' trial: the baseline runs its budget)."""
    import optuna

    baseline = bool(trial.user_attrs.get("defaults"))

    def report(record: dict) -> None:
        trial.report(record["dev_acc"], record["epoch"])
        if not baseline and trial.should_prune():
            raise optuna.TrialPruned(f"dev {record['dev_acc']:.4f} at epoch {record['epoch']}")
    return report


def objective(job: Job, settings: SearchSettings, tree: dict, data: dict, worker: str):
    """The function Optuna calls per trial: the best epoch's dev accuracy of a run at the budget."""
    from nn.mnist.params import ParamsError, validate
    from nn.mnist.training import TrainParams, subset, train_model
    from nn.train import DivergedError, UselessModelError

    def run(trial) -> float:
        trial.set_user_attr("worker", worker)
        values = {path: d.suggest(trial, path) for path, d in settings.space.items()}
        section = with_values(tree, {**settings.budget, **expand(settings.space, values)})
        try:
            p = validate(TrainParams, section[job.model], job.model)
            x, y = subset(*data["train"], p.train_size, p.seed)
            with contextlib.redirect_stdout(io.StringIO()):
                trained = train_model(p, x, y, *data["dev"], name=job.model,
                                      label=f"trial {trial.number}",
                                      on_epoch=epoch_reports(trial))
        except (ParamsError, DivergedError, UselessModelError, ValueError) as e:
            trial.set_user_attr("error", str(e).splitlines()[0])
            raise
        best = max(trained.history, key=lambda r: r["dev_acc"])
        trial.set_user_attr("best_epoch", best["epoch"])
        return best["dev_acc"]

    return run


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on `path` between processes of this machine (fcntl)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_experiments() -> None:
    """What saving trials as DVC experiments needs, checked before any trial: DVC commits the
    whole workspace (its outputs too) on top of a git commit."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            if repo.scm.no_commits:
                raise TuneError("DVC experiments start from a git commit and this repository "
                                "has none: commit first, or give --no-exp")
            missing = [str(out) for out in repo.index.outs if not out.exists]
    except DvcException as e:
        raise TuneError(f"DVC experiments: {str(e).splitlines()[0]}; or give --no-exp") from None
    if missing:
        raise TuneError(f"DVC experiments save the whole workspace, and its output {missing[0]} "
                        f"is missing: dvc repro (or dvc pull) first, or give --no-exp")


def save_experiment(name: str, params: dict, metrics: dict, epochs: tuple[dict, ...] = ()
                    ) -> None:
    """Save the workspace as the DVC experiment `name`, with `params`, the `epochs` (records as
    the train stage logs them, nn.mnist.live) and `metrics` in DVCLive's files beside it, so that
    `dvc exp show` lists it. One at a time on this machine: DVC commits the workspace, and two
    saves at once would take each other's files."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from nn.mnist.live import live_log, log_epoch

    with locked(LIVE.parent / "exp-save.lock"):
        with live_log(LIVE, dvcyaml=True) as live:
            live.log_params(params)
            for record in epochs:
                log_epoch(live, record)
            live.summary.update(metrics)
        try:
            with Repo() as repo:
                repo.experiments.save(name=name, include_untracked=[str(LIVE)], force=True)
        except DvcException as e:
            raise TuneError(f"experiment {name}: not saved: {str(e).splitlines()[0]}") from None


def dev_acc(trial) -> float | None:
    """A finished trial's dev accuracy: its best epoch's, or a pruned one's last reported."""
    reported = trial.intermediate_values
    return trial.value if trial.value is not None else \
        reported[max(reported)] if reported else None


def trial_experiment(job: Job, settings: SearchSettings, echo: Callable[[str], None]):
    """An Optuna callback: each finished trial, any state, saved as DVC experiment STUDY-NNN."""

    def callback(study, trial) -> None:
        params = {**expand(settings.space, trial.params), **settings.budget}
        metrics = {"state": trial.state.name.lower(), "dev_acc": dev_acc(trial),
                   "epochs": len(trial.intermediate_values)}
        try:
            epochs = tuple({"epoch": epoch, "dev_acc": value}
                           for epoch, value in sorted(trial.intermediate_values.items()))
            save_experiment(f"{job.study}-{trial.number:03d}", params, metrics, epochs)
        except TuneError as e:
            echo(f"tune: warning: {e}")

    return callback


def announce(echo: Callable[[str], None]):
    """An Optuna callback: one line per finished trial."""

    def callback(study, trial) -> None:
        value = dev_acc(trial)
        dev = "-" if value is None else f"{value:.4f}"
        why = trial.user_attrs.get("error", "")
        complete = [t.value for t in study.get_trials(deepcopy=False) if t.value is not None]
        best = f"{max(complete):.4f}" if complete else "-"
        echo(f"tune: trial {trial.number} {trial.state.name.lower()}: dev {dev} after "
             f"{len(trial.intermediate_values)} epoch(s) ({trial.user_attrs.get('worker')}, best "
             f"{best})" + (f": {why}" if why else ""))

    return callback


def counted(study) -> int:
    import optuna

    states = tuple(getattr(optuna.trial.TrialState, s) for s in COUNTED)
    return len(study.get_trials(deepcopy=False, states=states))


def failure_streak(limit: int):
    """An Optuna callback that stops the study once `limit` trials in a row have failed: a
    search whose every trial fails (a budget that diverges, data that cannot be learned)
    would otherwise replace them forever. `callback.stopped` says whether it did."""

    def callback(study, trial) -> None:
        callback.run = callback.run + 1 if trial.state.name == "FAIL" else 0
        if callback.run >= limit:
            callback.stopped = True
            study.stop()

    callback.run, callback.stopped = 0, False
    return callback


def work(job: Job, index: int, echo: Callable[[str], None] = print) -> None:
    """One worker: trials of the study until it holds job.trials that did not fail, and none
    is running elsewhere (a trial of a worker that died is failed by its heartbeat, and
    replaced); SearchStopped after STOP_AFTER failed trials in a row."""
    import optuna

    from nn.mnist.training import load_split
    from nn.train import DivergedError, UselessModelError

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings, tree = load_settings(job.model, job.params)
    data = {s: load_split(job.data, s) for s in ("train", "dev")}
    study = open_study(job, settings, tree, worker=index)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    callbacks = [optuna.study.MaxTrialsCallback(
        job.trials, states=tuple(getattr(optuna.trial.TrialState, s) for s in COUNTED)),
        announce(echo), failing := failure_streak(STOP_AFTER)]
    if job.experiments:
        callbacks.append(trial_experiment(job, settings, echo))
    run = objective(job, settings, tree, data, worker)
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial is not counted
        # a queued trial (the defaults', run again) runs even in a full study
        if counted(study) < job.trials or study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            study.optimize(run, callbacks=callbacks, gc_after_trial=True,
                           catch=(ValueError, DivergedError, UselessModelError))
            if failing.stopped:
                raise SearchStopped(f"after {STOP_AFTER} trials failed in a row")
        elif any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(
                deepcopy=False)):
            time.sleep(job.heartbeat)  # others' last trials: done, or failed by their heartbeat
        else:
            break


def run_workers(job: Job, workers: int, cores: int, echo: Callable[[str], None]) -> set[str]:
    """`workers` processes on the study, each with cores // workers threads (NN_THREADS for the
    engine's pool, the BLAS libraries through threadpoolctl); WorkerDied if one ended badly.
    Returns the workers' ids as their trials record them (host:pid)."""
    import dataclasses
    import json
    import signal
    import subprocess
    import sys

    if workers == 1:
        work(job, 0, echo)
        return {f"{socket.gethostname()}:{os.getpid()}"}
    threads = max(1, cores // workers)
    env = dict(os.environ, NN_THREADS=str(threads), PYTHONUNBUFFERED="1")
    spec = json.dumps({k: str(v) if isinstance(v, Path) else v
                       for k, v in dataclasses.asdict(job).items()})
    procs = [subprocess.Popen([sys.executable, "-m", "nn.mnist.tune", spec, str(i), str(threads)],
                              env=env) for i in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.wait()  # each got the Ctrl-C too: Optuna fails its trial and it stops
        raise
    dead = [(i, p, code) for i, (p, code) in enumerate(zip(procs, codes))
            if code not in (0, EXIT_STOPPED)]
    if not dead and EXIT_STOPPED in codes:
        raise SearchStopped(f"after {STOP_AFTER} trials failed in a row")
    if dead:
        i, _, code = dead[0]
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        raise WorkerDied(f"worker {i + 1} stopped ({how}); its trial is failed, the study is "
                         f"consistent: run the same command to go on",
                         [f"{socket.gethostname()}:{p.pid}" for _, p, _ in dead])
    return {f"{socket.gethostname()}:{p.pid}" for p in procs}


class WorkerDied(TuneError):
    """A local worker process ended badly; `workers` are their ids as trials record them."""

    def __init__(self, message: str, workers: list[str]):
        super().__init__(message)
        self.workers = workers


def fail_trials_of(job: Job, workers: list[str], reason: str) -> None:
    """Mark the running trials of dead `workers` failed at once (the heartbeat would, later)."""
    import optuna

    storage = open_storage(job.storage, job.heartbeat)
    study_id = storage.get_study_id_from_name(job.study)
    for t in storage.get_all_trials(study_id, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("worker") in workers:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "error", reason)
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)


def trials_table(study, settings: SearchSettings):
    """Every trial in order: number, state, dev accuracy (the best epoch's, or the last
    reported one of a pruned trial), epochs run, params, worker, failure."""
    import pandas as pd

    workers: dict[str, int] = {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        worker = t.user_attrs.get("worker")
        rows.append({"number": t.number, "state": t.state.name.lower(), "dev_acc": dev_acc(t),
                     "best_epoch": t.user_attrs.get("best_epoch"),
                     "epochs": len(t.intermediate_values),
                     "defaults": bool(t.user_attrs.get("defaults")),
                     **{path: t.params.get(path) for path in settings.space},
                     # workers numbered in order of appearance: no host name in a tracked file
                     "worker": workers.setdefault(worker, len(workers) + 1) if worker else None,
                     "error": t.user_attrs.get("error", "")})
    return pd.DataFrame(rows)


def importances(study) -> dict[str, float]:
    """Each param's share of the dev accuracy's variation over the complete trials
    (PED-ANOVA, Optuna's default evaluator: its fANOVA needs scikit-learn), or {} with too few."""
    import warnings

    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():  # "quantiles select the same trials": all equal, said so
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def charts(table, found: dict[str, float], model: str, study: str):
    """The optimisation history (dev accuracy per trial, best so far) and the importances."""
    from nn.mnist.charts import bar_chart, xy_chart

    done = table[table["state"] == "complete"]
    pruned = table[table["state"] == "pruned"]
    best = done["dev_acc"].cummax()
    defaults = table[table["defaults"] & (table["state"] == "complete")]
    history = xy_chart(
        [(f"{len(done)} complete", done["number"].tolist(), done["dev_acc"].tolist()),
         (f"{len(pruned)} pruned (last epoch)", pruned["number"].tolist(),
          pruned["dev_acc"].tolist()),
         ("best so far", done["number"].tolist(), best.tolist()),
         ("params.yaml's values", defaults["number"].tolist(), defaults["dev_acc"].tolist())],
        lines=[False, False, True, False], title=f"nn tune {model} ({study}): dev accuracy per trial",
        x_label="trial", y_label="dev accuracy")
    ranked = sorted(found.items(), key=lambda kv: -kv[1])
    importance = bar_chart(ranked or [("(too few complete trials)", 0.0)],
                           title=f"nn tune {model}: importance for dev accuracy (PED-ANOVA)",
                           x_label="share of the variation")
    return history, importance


def write_reports(study, settings: SearchSettings, model: str, out: Path):
    """out/MODEL.csv, MODEL-history.png and MODEL-importance.png, all three or none."""
    from nn.files import write_together
    from nn.mnist.pictures import png_bytes

    table = trials_table(study, settings)
    history, importance = charts(table, importances(study), model, study.study_name)
    paths = [out / f"{model}.csv", out / f"{model}-history.png", out / f"{model}-importance.png"]
    with write_together() as outputs:
        outputs.write_bytes(paths[0], table.to_csv(index=False, float_format="%.6g").encode())
        outputs.write_bytes(paths[1], png_bytes(history))
        outputs.write_bytes(paths[2], png_bytes(importance))
    return table, paths


def pruning_saved(study, budget_epochs: int) -> tuple[int, float]:
    """(pruned trials, seconds their unrun epochs would have taken at their own epoch pace)."""
    import optuna

    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    saved = 0.0
    for t in pruned:
        run = len(t.intermediate_values)
        if run and t.datetime_complete and t.datetime_start:
            pace = (t.datetime_complete - t.datetime_start).total_seconds() / run
            saved += pace * max(budget_epochs - run, 0)
    return len(pruned), saved


def retrain(job: Job, settings: SearchSettings, tree: dict, best_params: dict) -> dict:
    """The best trial's params at the full budget (no `budget`), scored on dev and test."""
    from nn.mnist.modelfile import normalize
    from nn.mnist.params import validate
    from nn.mnist.training import TrainParams, load_split, subset, train_model
    from nn.train import evaluate

    section = with_values(tree, expand(settings.space, best_params))
    p = validate(TrainParams, section[job.model], job.model)
    x, y = subset(*load_split(job.data, "train"), p.train_size, p.seed)
    trained = train_model(p, x, y, *load_split(job.data, "dev"), name=job.model,
                          label=f"{job.study}-best")
    x_test, y_test = load_split(job.data, "test")
    _, test_acc = evaluate(trained.net, normalize(x_test, trained.normalization), y_test)
    return {"dev_acc": max(r["dev_acc"] for r in trained.history), "test_acc": test_acc}


def defaults_metrics(model: str) -> dict:
    """The workspace model's dev and test accuracy from its committed reports, where present."""
    import json

    found = {}
    for key, file, field in (("dev_acc", "train.json", "dev_acc"),
                             ("test_acc", "metrics.json", "accuracy")):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found[key] = json.loads(Path(f"reports/{model}/{file}").read_text()).get(field)
    return found


def budget_epochs(settings: SearchSettings, tree: dict, model: str) -> int:
    return int(settings.budget.get(f"{model}.epochs", tree[model].get("epochs", 1)))


def tune(job: Job, settings: SearchSettings, tree: dict, *, workers: int, cores: int, out: Path,
         retrain_best: bool, echo: Callable[[str], None] = print) -> dict:
    """The whole search (see the module's docstring); returns the table, the best trial, the
    trials of this run that failed ("failed": count and the first one's line) and, with
    `retrain_best`, the retrain's metrics beside the defaults'. TuneError if the search
    stopped itself (STOP_AFTER failed trials in a row), quoting the first failure."""
    import optuna

    from nn.mnist.training import load_split

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if retrain_best:
        load_split(job.data, "test")  # checked now, not after the search
    # a bad storage or study stops here, before any worker
    study = open_study(job, settings, tree, queue_defaults=True)
    before, first = counted(study), len(study.get_trials(deepcopy=False))
    echo(f"tune: {job.model}: study {job.study!r} in {safe_url(job.storage)}, {before} of "
         f"{job.trials} trials there, {workers} worker(s) x {max(1, cores // workers)} thread(s), "
         f"budget {', '.join(f'{k}={v}' for k, v in settings.budget.items()) or 'full'}")
    start = time.perf_counter()
    died = stopped = None
    mine = None  # this run's workers: another machine's failures are its own to tell
    try:
        mine = run_workers(job, workers, cores, echo)
    except WorkerDied as e:
        died = e
        fail_trials_of(job, e.workers, str(e).partition(";")[0])
    except SearchStopped as e:
        stopped = e
    study = open_study(job, settings, tree)
    # a trial of a worker killed elsewhere is failed once its heartbeat is stale
    optuna.storages.fail_stale_trials(study)
    table, paths = write_reports(study, settings, job.model, out)
    pruned, saved = pruning_saved(study, budget_epochs(settings, tree, job.model))
    states = table["state"].value_counts()
    echo(f"tune: {len(table)} trials ({', '.join(f'{n} {s}' for s, n in states.items())}) in "
         f"the study, {time.perf_counter() - start:.0f} s this run; pruning saved about "
         f"{saved:.0f} s of trial time -> {', '.join(map(str, paths))}")
    if died:
        raise died
    ours = table["number"].map({t.number: mine is None or t.user_attrs.get("worker") in mine
                                for t in study.get_trials(deepcopy=False)})
    failed = table[(table["number"] >= first) & (table["state"] == "fail") & ours]
    why = "" if failed.empty else \
        f"trial {failed['number'].iloc[0]}: {failed['error'].iloc[0] or 'failed'}"
    if stopped:
        raise TuneError(f"the search stopped {stopped}; the first failure: {why}")
    result = {"table": table, "best": None, "final": None, "pruned": pruned, "saved": saved,
              "failed": (len(failed), why)}
    if "complete" not in set(table["state"]):
        raise TuneError("no trial completed: " + (table["error"].iloc[-1] or "see the log above"))
    result["best"] = best = study.best_trial
    if retrain_best:
        echo(f"tune: retraining trial {best.number}'s params at the full budget")
        final = retrain(job, settings, tree, best.params)
        result["final"] = {**final, **{f"default_{k}": v for k, v in
                                       defaults_metrics(job.model).items()}}
        if job.experiments:
            save_experiment(f"{job.study}-best", expand(settings.space, best.params), final)
    return result


def make_job(model: str, params: Path, data: Path, *, storage: str | None, study: str | None,
             trials: int | None, seed: int | None, heartbeat: float, experiments: bool
             ) -> tuple[Job, SearchSettings, dict]:
    """The search's job, its settings and params.yaml's tree, all checked (check_values: every
    value the space and budget can give passes the params model a training run uses)."""
    from nn.mnist.params import validate
    from nn.mnist.training import TrainParams

    settings, tree = load_settings(model, params)
    job = Job(model=model, params=params, data=data, storage=storage or DEFAULT_STORAGE,
              study=study or f"tune-{model}", trials=trials or settings.trials,
              seed=settings.seed if seed is None else seed, heartbeat=heartbeat,
              experiments=experiments)
    if not math.isfinite(heartbeat) or heartbeat <= 0:
        raise TuneError(f"--heartbeat {heartbeat}: must be a positive number of seconds")
    check_values(settings, tree, model, lambda section, prefix: validate(TrainParams, section, prefix))
    return job, settings, tree


if __name__ == "__main__":  # one worker of run_workers: python -m nn.mnist.tune JOB INDEX THREADS
    import json
    import sys

    from threadpoolctl import threadpool_limits

    spec, index, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fields = json.loads(spec)
    job = Job(**{**fields, "params": Path(fields["params"]), "data": Path(fields["data"])})
    try:
        with threadpool_limits(threads):
            work(job, index)
    except KeyboardInterrupt:
        sys.exit(130)
    except SearchStopped:
        sys.exit(EXIT_STOPPED)  # the command says why, from the study
    except TuneError as e:
        print(f"error: worker {index + 1}: {e}", file=sys.stderr)
        sys.exit(1)
