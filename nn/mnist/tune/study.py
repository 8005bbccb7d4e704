"""The study of `nn tune`: the job every worker is given, Optuna's storage the study lives in,
the study created or joined (its first trial params.yaml's own values), a trial's dev accuracy."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from nn.mnist.search_space import SearchSettings, lookup

DEFAULT_STORAGE = "sqlite:///.nn-tune/studies.db"  # .nn-tune/ is in .gitignore


class TuneError(RuntimeError):
    """The search cannot start or go on (storage, study, data); one line."""


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
            # two processes creating the tables of a new database at once (two workers, or a
            # worker and a reader): one of them loses, with a table that already exists or a
            # second row in alembic_version (an IntegrityError), and tries again
            lost_race = isinstance(e, sqlalchemy.exc.IntegrityError) or "already exists" in str(e)
            if not lost_race or attempt == 2:
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


def dev_acc(trial) -> float | None:
    """A finished trial's dev accuracy: its best epoch's, or a pruned one's last reported."""
    reported = trial.intermediate_values
    return trial.value if trial.value is not None else \
        reported[max(reported)] if reported else None
