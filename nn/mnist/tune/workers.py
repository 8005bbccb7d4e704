"""The trials of `nn tune`: the function Optuna calls per trial (a training run, pruned from its
per-epoch dev accuracy), one worker's loop over the study, and the worker processes, each
`python -m nn.mnist.tune JOB INDEX THREADS` (__main__.py)."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
from pathlib import Path
from typing import Callable

from nn.mnist.search_space import SearchSettings, expand, load_settings, with_values
from nn.mnist.tune.experiments import trial_experiment
from nn.mnist.tune.study import Job, TuneError, dev_acc, open_storage, open_study

COUNTED = ("COMPLETE", "PRUNED", "RUNNING")  # toward --trials: not failed ones, nor one queued
QUEUED_WAIT = 60.0  # seconds the other workers of a run leave a queued trial to worker 0
STOP_AFTER = 3  # trials of a worker failed in a row that stop the search: it cannot go on
EXIT_STOPPED = 3  # a worker process's exit status when it stopped so (python -m nn.mnist.tune)


class SearchStopped(TuneError):
    """A worker stopped after STOP_AFTER failed trials in a row; the caller words the line."""


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
    # Optuna claims a queued trial with SELECT ... FOR UPDATE, which SQLite ignores: two workers
    # of one run could both take the defaults' trial, and the second then fail to tell it
    # ("Cannot tell a COMPLETE trial"). The queued trial is worker 0's: the others start once
    # it is claimed (or after QUEUED_WAIT seconds, should worker 0 be gone).
    deadline = time.monotonic() + QUEUED_WAIT
    while index > 0 and time.monotonic() < deadline and study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        time.sleep(0.2)
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
