"""Bad input against bugs, as DVC tells them apart: an expected error (params, data, files,
model files, devices, remotes) is one line naming the problem; anything else is a bug, said to
be one in one line that tells how to see its traceback (NN_DEBUG=1), or the traceback itself."""

from __future__ import annotations

import os
import sys

DEBUG = "NN_DEBUG"  # NN_DEBUG=1: a bug's full traceback instead of its one line


def debugging() -> bool:
    return os.environ.get(DEBUG, "").strip() not in ("", "0")


def unexpected(label: str, error: BaseException, status: int = 1) -> SystemExit:
    """The SystemExit for a bug met while running `label` (a stage, or `nn`), after its one line
    on stderr; with NN_DEBUG=1 the caller re-raises the bug instead (see `debugging`)."""
    what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    print(f"{label}: unexpected error (a bug, not a problem with your input): {what}; "
          f"run with {DEBUG}=1 for the traceback", file=sys.stderr)
    return SystemExit(status)
