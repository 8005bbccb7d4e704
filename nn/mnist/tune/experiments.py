"""`nn tune`'s trials as DVC experiments: what saving them needs, checked before any trial, and
each finished trial saved as the experiment STUDY-NNN, its params and metrics in DVCLive's files."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Callable

from nn.mnist.search_space import SearchSettings, expand
from nn.mnist.tune.study import Job, TuneError, dev_acc

LIVE = Path(".nn-tune/live")   # DVCLive's files of the trial being saved as an experiment


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
