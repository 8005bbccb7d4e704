"""The pipeline's stages, one module each, run as `python -m stages.<name>` (see dvc.yaml)."""

import signal
import sys
from pathlib import Path


def _interrupted_while_starting(signum, frame):
    name = Path(sys.argv[0]).stem if sys.argv[0] != "-m" else "stage"
    print(f"{name}: interrupted while starting; nothing was written", file=sys.stderr)
    raise SystemExit(130)


# Run as a command, a stage spends its first second importing numpy, pandas, pydantic: Ctrl-C
# then exits quietly too, until stages.common.fatal_errors takes over with the stage's name.
if sys.argv[:1] == ["-m"]:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
