"""DVCLive as the train stage and `nn tune` use it: one step per epoch (loss, train and dev
accuracy, learning rate) written as it happens, so that `dvc exp show` has a step column and the
editor's plots move during a run.

No wall-clock time is written (DVCLive's `timestamp=False`), no report, and no experiment is
saved by DVCLive itself: `dvc exp run` (or `nn tune`) does that.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

EPOCH_METRICS = ("loss", "train_acc", "dev_acc", "lr")  # of an nn.train.fit history record


@contextlib.contextmanager
def live_log(folder: str | Path, *, dvcyaml: bool = False) -> Iterator:
    """A `dvclive.Live` writing to `folder` (emptied first); with `dvcyaml`, the dvc.yaml that
    declares its files is written there too, else dvc.yaml declares them (the train stage's).
    None in a git repository without a commit, where DVCLive cannot start (nothing is logged)."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    folder = Path(folder)
    try:
        live = Live(dir=str(folder), dvcyaml=str(folder / "dvc.yaml") if dvcyaml else False,
                    save_dvc_exp=False, report=None)
    except SCMError as e:  # "Empty git repo": DVCLive asks for HEAD's revision
        print(f"note: no DVCLive log in {folder}: {e}", file=sys.stderr)
        yield None
        return
    with live:
        yield live


def log_epoch(live, record: dict) -> None:
    """One epoch's record (nn.train.fit's: any of EPOCH_METRICS it holds) as DVCLive's step
    numbered as the epoch is in history.csv (from 1)."""
    if "epoch" in record:
        live.step = int(record["epoch"])
    for name in EPOCH_METRICS:
        if name in record:
            live.log_metric(name, float(record[name]))
    live.next_step()
