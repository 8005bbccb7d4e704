"""DVCLive as the train stage and `nn tune` use it: one step per epoch (loss, train and dev
accuracy, learning rate) written as it happens, so that `dvc exp show` has a step column and the
editor's plots move during a run.

No wall-clock time is written (DVCLive's `timestamp=False`), no report, and no experiment is
saved by DVCLive itself: `dvc exp run` (or `nn tune`) does that.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

EPOCH_METRICS = ("loss", "train_acc", "dev_acc", "lr")  # of an nn.train.fit history record


@contextlib.contextmanager
def live_log(folder: str | Path, *, dvcyaml: bool = False) -> Iterator:
    """A `dvclive.Live` writing to `folder` (emptied first); with `dvcyaml`, the dvc.yaml that
    declares its files is written there too, else dvc.yaml declares them (the train stage's)."""
    folder = Path(folder)
    with _live_class()(dir=str(folder), dvcyaml=str(folder / "dvc.yaml") if dvcyaml else False,
                       save_dvc_exp=False, report=None) as live:
        yield live


def _live_class():
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    class FirstCommitLive(Live):
        """Live, also in a git repository without a commit yet (`git init`, then `dvc repro`),
        where DVCLive's own start asks for HEAD's revision and fails: the files are written
        all the same, with no experiment to name (there is none before a commit)."""

        def _init_dvc(self):
            try:
                super()._init_dvc()
            except SCMError:
                self._dvc_repo = None
                self._dvc_file = self._init_dvc_file()

    return FirstCommitLive


def log_epoch(live, record: dict) -> None:
    """One epoch's record (nn.train.fit's: any of EPOCH_METRICS it holds) as DVCLive's step
    numbered as the epoch is in history.csv (from 1)."""
    if "epoch" in record:
        live.step = int(record["epoch"])
    for name in EPOCH_METRICS:
        if name in record:
            live.log_metric(name, float(record[name]))
    live.next_step()
