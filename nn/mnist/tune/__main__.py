"""One worker process of `nn tune`, spawned by workers.run_workers: workers.work on the study,
with THREADS threads. Exit status 0, EXIT_STOPPED after STOP_AFTER failed trials in a row (the
command says why, from the study), 1 on a TuneError (one line on stderr), 130 on Ctrl-C.

    python -m nn.mnist.tune JOB INDEX THREADS   # JOB: the Job as JSON; INDEX from 0
"""

import json
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

from nn.mnist.tune.study import Job, TuneError
from nn.mnist.tune.workers import EXIT_STOPPED, SearchStopped, work

if __name__ == "__main__":
    spec, index, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fields = json.loads(spec)
    job = Job(**{**fields, "params": Path(fields["params"]), "data": Path(fields["data"])})
    try:
        with threadpool_limits(threads):
            work(job, index)
    except KeyboardInterrupt:
        sys.exit(130)
    except SearchStopped:
        sys.exit(EXIT_STOPPED)  # the command says why, from the study
    except TuneError as e:
        print(f"error: worker {index + 1}: {e}", file=sys.stderr)
        sys.exit(1)
