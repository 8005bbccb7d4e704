"""`nn tune`: an Optuna search over MODEL's params, each trial trained in this process by
`train_model` and pruned from its per-epoch dev accuracy, every trial a DVC experiment.

The study lives in Optuna's storage (a SQLite file by default, PostgreSQL for many machines),
so any number of worker processes, here or elsewhere, share it, and the same command resumes
it after Ctrl-C. A heartbeat marks the trial of a killed worker failed. Trials are ranked by
dev accuracy only; the test split is read by the `--retrain` alone.

  search.py       the command from end to end: make_job checks the job, tune runs the search
  study.py        the study: the Job, Optuna's storage, the study created or joined
  workers.py      the trials: the objective, one worker's loop, the worker processes
  __main__.py     one worker process (python -m nn.mnist.tune JOB INDEX THREADS)
  experiments.py  each trial saved as a DVC experiment
  report.py       reports/tune/: the trials table, the params' importances, the charts
"""

from nn.mnist.tune.experiments import check_experiments
from nn.mnist.tune.search import make_job, tune
from nn.mnist.tune.study import Job, TuneError

__all__ = ["Job", "TuneError", "check_experiments", "make_job", "tune"]
