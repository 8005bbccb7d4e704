"""`nn tune`'s DVC client: named trials queued with `dvc exp run --queue`, the queue's workers
started and watched through `dvc exp show`, and never a wait forever on a trial DVC lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from nn.mnist.search_space import set_args

DONE = ("success", "failed")


class TuneError(RuntimeError):
    """The search cannot start or go on (DVC or git is missing something); one line."""


COMMAND_TIMEOUT = 600.0  # seconds any one dvc or git command may take; none needs near that
EXP_SHOW_TIMEOUT = 60.0  # `dvc exp show` takes seconds; a try that hangs is stopped and retried
ORPHAN_AFTER = 180.0     # seconds a trial may show "running" with no process, or be missing
                         # from `dvc exp show`, before the search counts it failed
STALL_AFTER = 900.0      # seconds queued trials may wait, with workers restarted, for a start


def _run(root: Path, args: list[str], env: dict | None = None,
         timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    # Output through temporary files, not pipes: `dvc queue start` leaves worker daemons that
    # inherit the output handles, and reading a pipe would wait for them to exit.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(args, cwd=root, env=env, stdout=out, stderr=err, timeout=timeout)
        except subprocess.TimeoutExpired:
            shown = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(args[:5]))
            raise TuneError(f"`{shown} ...` did not finish in {timeout:.0f} s; it was stopped") from None
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(args, proc.returncode, out.read().decode(errors="replace"),
                                           err.read().decode(errors="replace"))


def dvc(root: Path, *args: str, env: dict | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run `dvc ARGS` (this Python's DVC); its stdout, or TuneError with DVC's own error line."""
    proc = _run(root, [sys.executable, "-m", "dvc", *args], env, timeout)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        error = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "")
        raise TuneError(f"`dvc {' '.join(args[:3])} ...` failed: {error}")
    return proc.stdout


def preflight(root: Path) -> None:
    """What DVC experiments need, checked up front so that the message says how to fix it."""
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        raise TuneError(f"{root}: not the root of a DVC project (no .dvc/ or dvc.yaml); "
                        "run nn tune where dvc.yaml is")
    if _run(root, ["git", "rev-parse", "--verify", "-q", "HEAD"]).returncode != 0:
        raise TuneError("DVC experiments start from a git commit and this repository has none: "
                        "git add -A && git commit -m 'baseline' (uncommitted changes to "
                        "tracked files are then carried into every trial)")
    for key in ("user.name", "user.email"):
        if not _run(root, ["git", "config", key]).stdout.strip():
            raise TuneError(f"DVC commits each experiment with git, and git's {key} is not set: "
                            f"git config {key} '...'")


def exp_show(root: Path, *args: str, tries: int = 4) -> list:
    """`dvc exp show --json ARGS`, retried: DVC reads a running experiment's metrics from its
    temporary directory, and when the experiment ends during the read, DVC can fail
    ("directory ... does not exist") or hang for good (pygit2's blob reader waits on a thread
    that died), so each try is stopped after EXP_SHOW_TIMEOUT seconds."""
    for attempt in range(tries):
        try:
            return json.loads(dvc(root, "exp", "show", "--json", *args, timeout=EXP_SHOW_TIMEOUT))
        except TuneError:
            if attempt == tries - 1:
                raise
            time.sleep(2)


def experiments(root: Path) -> dict[str, dict]:
    """name -> {state, metrics: {file: {...}}, log} for every experiment `dvc exp show` knows."""
    out = {}
    for baseline in exp_show(root):
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            executor = exp.get("executor") or {}
            local = executor.get("local") or {}
            out[rev["name"]] = {"state": executor.get("state") or "success",
                                "metrics": {f: m.get("data", {}) for f, m in
                                            ((rev.get("data") or {}).get("metrics") or {}).items()},
                                "log": local.get("log"), "pid": local.get("pid")}
    return out


def baseline_metrics(root: Path) -> dict[str, dict]:
    """The workspace's metrics: {file: {...}}."""
    first = exp_show(root, "--num", "1")[0]
    return {f: m.get("data", {}) for f, m in ((first.get("data") or {}).get("metrics") or {}).items()}


def failure_reason(log: str | None) -> str:
    """The trial's own error line (`train@mlp: error: ...`), else DVC's, from its log."""
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except (OSError, TypeError):
        return "failed (no log)"
    ours = [ln for ln in lines if ": error: " in ln]
    dvcs = [ln for ln in lines if ln.startswith("ERROR")]
    return (ours or dvcs or lines or ["failed"])[-1]


def alive(pid: int | None) -> bool:
    """Whether process `pid` exists."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def orphaned(exp: dict | None) -> str | None:
    """Why DVC will never finish this trial, or None while it still may."""
    if exp is None:
        return "DVC lost it: it is neither queued, running nor finished in `dvc exp show`"
    if exp["state"] == "running" and not alive(exp.get("pid")):
        return (f"its process {exp['pid']} ended and DVC never recorded a result"
                if exp.get("pid") else "DVC shows it running, but no process runs it")
    return None


def thread_env(threads: int) -> dict:
    """The environment of queue workers: BLAS and the engine's own pool held to `threads`."""
    t = str(threads)
    return dict(os.environ, NN_THREADS=t, OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t,
                MKL_NUM_THREADS=t)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Search:
    """Queue named trials, start the workers, wait, and clean up on Ctrl-C."""

    def __init__(self, root: Path, model: str, on_poll: Callable[[dict], None] | None = None,
                 poll: float = 5.0):
        self.root, self.model, self.on_poll, self.poll = root, model, on_poll, poll

    def queue(self, name: str, overrides: dict[str, Any]) -> None:
        # evaluate@MODEL and its upstream: the trial's test accuracy is computed and shown in
        # `dvc exp show`, but the search never looks at it.
        dvc(self.root, "exp", "run", "--queue", "--name", name, *set_args(overrides),
            f"evaluate@{self.model}")

    def run(self, names: list[str], workers: int) -> dict[str, dict]:
        """Start `workers` workers of cores/workers threads each; wait until every name is done."""
        threads = max(1, cores() // workers)
        try:
            dvc(self.root, "queue", "start", "--jobs", str(workers), env=thread_env(threads))
            return self._wait(names, workers, threads)
        except KeyboardInterrupt:
            self.stop(names)
            raise

    def _wait(self, names: list[str], workers: int, threads: int) -> dict[str, dict]:
        """Poll `dvc exp show` until every trial is done. A trial DVC will never finish (its
        process gone, or the trial gone from DVC) counts as failed after ORPHAN_AFTER seconds,
        and a queue that does not move for STALL_AFTER seconds is an error: never wait forever."""
        idle_since = moved_at = time.monotonic()
        suspect: dict[str, float] = {}  # name -> since when it has looked orphaned or lost
        given_up: dict[str, dict] = {}
        last = None
        while True:
            exps = experiments(self.root)
            ours = {}
            for n in names:
                e = given_up.get(n) or exps.get(n)
                reason = None if n in given_up else orphaned(e)
                if reason is None:
                    suspect.pop(n, None)
                elif time.monotonic() - suspect.setdefault(n, time.monotonic()) > ORPHAN_AFTER:
                    e = given_up[n] = self._give_up(n, e, reason)
                ours[n] = e or {"state": "queued", "metrics": {}, "log": None, "pid": None}
            if self.on_poll is not None:
                self.on_poll(ours)
            states = [e["state"] for e in ours.values()]
            if all(s in DONE for s in states):
                return ours
            if states != last:
                last, moved_at = states, time.monotonic()
            elif "running" not in states and time.monotonic() - moved_at > STALL_AFTER:
                raise TuneError(f"DVC's queue has not started a trial in {STALL_AFTER:.0f} s "
                                "although workers were started; see `dvc queue status` and "
                                "`dvc queue logs NAME`")
            if "running" in states:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 60:
                # Workers stop when the queue looks empty; trials still queued need new ones.
                dvc(self.root, "queue", "start", "--jobs", str(workers), env=thread_env(threads))
                idle_since = time.monotonic()
            time.sleep(self.poll)

    def _give_up(self, name: str, exp: dict | None, reason: str) -> dict:
        """Count a trial DVC will never finish as failed, and clear it from DVC's queue."""
        print(f"tune: {name}: {reason}; counted as failed", file=sys.stderr)
        if exp is not None:
            try:  # DVC marks a running trial with no process as failed
                dvc(self.root, "queue", "kill", name)
            except TuneError:
                pass
        return {"state": "failed", "metrics": {}, "log": None, "error": reason}

    def stop(self, names: list[str]) -> None:
        """Remove our trials still queued and kill our running ones; finished ones are kept."""
        exps = experiments(self.root)
        queued = [n for n in names if exps.get(n, {}).get("state") == "queued"]
        running = [n for n in names if exps.get(n, {}).get("state") == "running"]
        if queued:
            dvc(self.root, "queue", "remove", *queued)
        if running:
            dvc(self.root, "queue", "kill", *running)
        print(f"tune: stopped: {len(queued)} queued trial(s) removed, {len(running)} running "
              f"killed; the finished ones stay in `dvc exp show`", file=sys.stderr)
