"""`nn tune` from end to end: the job and its settings checked (make_job), then the search
(tune): the study opened, its workers run, the reports written, the best trial retrained."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Callable

from nn.mnist.search_space import SearchSettings, check_values, expand, load_settings, with_values
from nn.mnist.tune.experiments import save_experiment
from nn.mnist.tune.report import pruning_saved, write_reports
from nn.mnist.tune.study import DEFAULT_STORAGE, Job, TuneError, open_study, safe_url
from nn.mnist.tune.workers import SearchStopped, WorkerDied, counted, fail_trials_of, run_workers


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
    """The whole search (see the package's docstring); returns the table, the best trial, the
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
