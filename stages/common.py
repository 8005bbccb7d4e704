"""What every stage shares: one-line fatal errors that say what became of the stage's outputs.
The params models and their loading are the application's (nn.mnist.params)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

import click

from nn.mnist.errors import debugging, unexpected
from nn.mnist.params import ParamsError, read_yaml


def _recorded(dvc_stage: str, lock: Path = Path("dvc.lock")) -> set[str]:
    """The outputs dvc.lock records for `dvc_stage` (empty without a lock or that stage)."""
    try:
        stage = ((read_yaml(lock) or {}).get("stages") or {}).get(dvc_stage) or {}
        return {out["path"] for out in stage.get("outs") or []}
    except (ParamsError, AttributeError, KeyError, TypeError):
        return set()


def _removed_note(dvc_stage: str, outputs: tuple[Path, ...]) -> str | None:
    """Says which of a failed stage's outputs are gone though dvc.lock records them, and how to
    get them back: the stage never touches them, but `dvc repro` and `dvc exp run` delete a
    stage's outputs before they run it. None when nothing recorded is missing."""
    recorded = _recorded(dvc_stage) if any(not p.exists() for p in outputs) else set()
    gone = [str(p) for p in outputs if not p.exists()
            and any(q.as_posix() in recorded for q in (p, *p.parents))]
    if not gone:
        return None
    return (f"DVC removed {', '.join(gone)} before the run; `dvc checkout {dvc_stage}` restores "
            f"the cached ones (docs/11-pipeline.md)")


@contextlib.contextmanager
def fatal_errors(stage: str, *errors: type[BaseException],
                 outputs: tuple[str | Path, ...] = (), dvc_stage: str | None = None
                 ) -> Iterator[None]:
    """Turn the expected errors of a stage (ParamsError and `errors`: bad input) into one line on
    stderr and exit status 1 (130 for Ctrl-C); the line says whether the stage's `outputs` are
    still there, and how DVC restores them (`dvc_stage`: the stage's name in dvc.yaml, when it
    is not `stage`). Any other exception is a bug: one line saying so (nn.mnist.errors), or its
    traceback with NN_DEBUG=1."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt
    outputs = tuple(Path(p) for p in outputs)
    try:
        yield
    except (ParamsError, *errors) as e:
        note = _removed_note(dvc_stage or stage, outputs)
        print(f"{stage}: error: {e}" + (f" ({note})" if note else ""), file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # Ctrl-C: the outputs are written together or not at all
        note = _removed_note(dvc_stage or stage, outputs)
        print(f"{stage}: interrupted; " + (f"nothing written, but {note}" if note else
                                            "outputs left as they were"), file=sys.stderr)
        raise SystemExit(130) from None
    except (click.ClickException, click.exceptions.Exit):  # a usage error: typer's own line
        raise
    except Exception as e:  # not bad input: a bug, with its traceback one variable away
        if debugging():
            raise
        raise unexpected(stage, e) from None
