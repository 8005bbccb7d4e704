"""`nn tune`: a seeded random search run as real DVC experiments, then a retrain of the best.

Each trial is a named experiment queued with `dvc exp run --queue --name NAME -S path=value`,
so it shows in `dvc exp show`, compares with `dvc exp diff` and is kept with `dvc exp apply`.
DVC queues grids but does not sample or rank; this module does those two things and leaves
running, storing and committing to DVC. Trials are ranked by dev accuracy, never by test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
from pydantic import Field, model_validator

from nn.mnist.params import Float, Int, Params, ParamsError, Str, read_yaml, validate

KINDS = ("log_uniform", "uniform", "int_uniform", "choice")
DONE = ("success", "failed")


class TuneError(RuntimeError):
    """The search cannot start or go on (DVC or git is missing something); one line."""


class Distribution(Params):
    """One searched param: exactly one of the four kinds; `also` lists paths that get the same
    value (a layer's width is also the next layer's input)."""

    log_uniform: tuple[Float, Float] | None = None
    uniform: tuple[Float, Float] | None = None
    int_uniform: tuple[Int, Int] | None = None
    choice: Annotated[tuple[Any, ...], Field(min_length=1)] | None = None
    also: tuple[Str, ...] = ()

    @model_validator(mode="after")
    def _one_kind(self):
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {len(given)})")
        if self.kind != "choice":
            low, high = getattr(self, self.kind)
            if not low < high:
                raise ValueError(f"{self.kind}: low {low} must be < high {high}")
            if self.kind == "log_uniform" and low <= 0:
                raise ValueError(f"log_uniform: low {low} must be > 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    def draw(self, rng: np.random.Generator) -> Any:
        """One value; floats kept to 4 significant digits so that names and tables stay short."""
        if self.kind == "choice":
            return self.choice[int(rng.integers(len(self.choice)))]
        if self.kind == "int_uniform":
            return int(rng.integers(self.int_uniform[0], self.int_uniform[1] + 1))
        low, high = getattr(self, self.kind)
        if self.kind == "log_uniform":
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        return float(f"{min(max(value, low), high):.4g}")


class SearchSettings(Params):
    """tune.MODEL in params.yaml: read by `nn tune` only, so editing it reruns no stage."""

    trials: Annotated[Int, Field(ge=1)]
    workers: Annotated[Int, Field(ge=1)] = 1
    seed: Annotated[Int, Field(ge=0)] = 0
    budget: dict[Str, Any] = {}          # dotted path -> value, for the trials only
    space: Annotated[dict[Str, Distribution], Field(min_length=1)]


def lookup(tree: Any, path: str) -> Any:
    """The value at a dotted path as `dvc exp run -S` takes it ("mlp.layers.4.p"), or KeyError."""
    node = tree
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(path)
    return node


def load_settings(model: str, params: Path) -> tuple[SearchSettings, dict]:
    """tune.MODEL, checked against params.yaml: every path exists and belongs to MODEL."""
    tree = read_yaml(params)
    section = f"tune.{model}"
    data = (tree or {}).get("tune", {}).get(model) if isinstance(tree, dict) else None
    if data is None:
        raise ParamsError(f"{params}: no section {section!r} (the search space of {model})")
    settings = validate(SearchSettings, data, section)
    paths = [("budget", p) for p in settings.budget]
    paths += [("space", p) for d_path, d in settings.space.items() for p in (d_path, *d.also)]
    for where, path in paths:
        if not path.startswith(f"{model}."):
            raise ParamsError(f"{section}.{where}: {path}: must be a param of {model} "
                              f"(start with '{model}.')")
        try:
            lookup(tree, path)
        except KeyError:
            raise ParamsError(f"{section}.{where}: {path}: no such param in {params} "
                              f"(list items by index: {model}.layers.4.p)") from None
    return settings, tree


def sample(space: dict[str, Distribution], trials: int, seed: int) -> list[dict[str, Any]]:
    """`trials` dicts of path -> value (the `also` paths included), from one seeded generator."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        trial = {}
        for path, dist in space.items():
            value = dist.draw(rng)
            for p in (path, *dist.also):
                trial[p] = value
        out.append(trial)
    return out


def yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def set_args(overrides: dict[str, Any]) -> list[str]:
    return [a for path, value in overrides.items() for a in ("-S", f"{path}={yaml_value(value)}")]


# ---- DVC and git, through their command lines ---------------------------------------------

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


def metric(exp: dict, file: str, key: str) -> float | None:
    value = exp["metrics"].get(file, {}).get(key) if exp["state"] == "success" else None
    return float(value) if isinstance(value, (int, float)) else None


def results_table(model: str, trials: dict[str, dict[str, Any]], exps: dict[str, dict],
                  space: dict[str, Distribution]):
    """One row per trial, ranked: finished trials by dev accuracy, failed last."""
    import pandas as pd

    train_json = f"reports/{model}/train.json"
    rows = []
    for name, overrides in trials.items():
        e = exps[name]
        rows.append({"name": name, "status": "ok" if e["state"] == "success" else "failed",
                     "dev_acc": metric(e, train_json, "dev_acc"),
                     "best_epoch": metric(e, train_json, "best_epoch"),
                     **{path: overrides[path] for path in space},
                     "error": (e.get("error") or failure_reason(e["log"]))
                     if e["state"] == "failed" else ""})
    table = pd.DataFrame(rows)
    table["failed"] = table["status"] != "ok"
    table = table.sort_values(["failed", "dev_acc"], ascending=[True, False], kind="stable").drop(columns="failed").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def most_influential(table, space: dict[str, Distribution]) -> str | None:
    """The numeric searched param whose rank correlation with dev accuracy is largest."""
    ok = table[table["status"] == "ok"]
    numeric = [p for p, d in space.items() if d.kind != "choice"]
    if len(ok) < 3 or not numeric:
        return numeric[0] if numeric else None
    # Spearman's rho: Pearson's on the ranks (pandas' own "spearman" would need SciPy).
    corr = {p: abs(ok[p].astype(float).rank().corr(ok["dev_acc"].rank())) for p in numeric}
    corr = {p: (0.0 if math.isnan(c) else c) for p, c in corr.items()}
    return max(numeric, key=lambda p: corr[p])


def accuracy_chart(table, space: dict[str, Distribution], model: str):
    """Dev accuracy of every finished trial against the most influential param."""
    from nn.mnist.charts import xy_chart

    param = most_influential(table, space)
    ok = table[table["status"] == "ok"]
    xs = ok[param].astype(float).tolist() if param else list(range(1, len(ok) + 1))
    return xy_chart([(f"{len(ok)} finished trials", xs, ok["dev_acc"].tolist())],
                    title=f"nn tune {model}: dev accuracy per trial", x_label=param or "trial",
                    y_label="dev accuracy", lines=False,
                    log_x=bool(param) and space[param].kind == "log_uniform")


def tune(root: Path, model: str, params: Path, out: Path, *, trials: int | None = None,
         workers: int | None = None, prefix: str | None = None, retrain: bool = False,
         poll: float = 5.0, echo: Callable[[str], None] = print) -> dict:
    """The whole search: sample, queue, run, rank, write out/MODEL.csv and .png, and with
    `retrain` run the best trial's params once more at the full budget.
    Returns {"table", "best", "final"}; `final` holds the retrain's metrics, or None."""
    from tqdm import tqdm

    from nn.files import write_bytes
    from nn.mnist.pictures import png_bytes

    settings, _ = load_settings(model, params)
    trials = trials or settings.trials
    workers = workers or settings.workers
    prefix = prefix or f"tune-{model}-{settings.seed}"
    preflight(root)
    names = [f"{prefix}-{i + 1:02d}" for i in range(trials)]
    taken = set(experiments(root)) & {*names, f"{prefix}-best"}
    if taken:
        raise TuneError(f"experiment {sorted(taken)[0]} exists: pick another --prefix, or "
                        f"remove the old ones (dvc exp remove {' '.join(sorted(taken))})")
    samples = dict(zip(names, sample(settings.space, trials, settings.seed)))
    threads = max(1, cores() // workers)
    echo(f"tune: {model}: {trials} trials, {workers} worker(s) x {threads} thread(s), budget "
         f"{', '.join(f'{k}={yaml_value(v)}' for k, v in settings.budget.items()) or 'full'}")
    search = Search(root, model, poll=poll)
    try:
        for name, overrides in tqdm(samples.items(), desc="queueing", unit="trial", leave=False,
                                    disable=None):
            search.queue(name, {**settings.budget, **overrides})
    except KeyboardInterrupt:
        search.stop(names)
        raise

    train_json = f"reports/{model}/train.json"
    bar = tqdm(total=trials, desc=f"tune {model}", unit="trial", disable=None)
    seen: set[str] = set()

    def on_poll(exps: dict) -> None:
        done = {n for n, e in exps.items() if e["state"] in DONE}
        accs = [a for e in exps.values() if (a := metric(e, train_json, "dev_acc")) is not None]
        best = f"best dev {max(accs):.4f}" if accs else "best dev -"
        bar.set_postfix_str(best, refresh=False)
        bar.update(len(done) - bar.n)
        for n in sorted(done - seen):  # one line per finished trial when there is no bar
            if bar.disable:
                acc = metric(exps[n], train_json, "dev_acc")
                echo(f"tune: {n} " + (f"dev {acc:.4f}" if acc is not None else "failed") +
                     f" ({len(done)}/{trials}, {best})")
        seen.update(done)

    start = time.perf_counter()
    search.on_poll = on_poll
    exps = search.run(names, workers)
    bar.close()
    table = results_table(model, samples, exps, settings.space)
    write_bytes(out / f"{model}.csv", table.to_csv(index=False, float_format="%.6g").encode())
    write_bytes(out / f"{model}.png", png_bytes(accuracy_chart(table, settings.space, model)))
    failed = int((table["status"] != "ok").sum())
    echo(f"tune: {trials - failed} trials finished, {failed} failed, in "
         f"{time.perf_counter() - start:.0f} s -> {out / f'{model}.csv'}, {out / f'{model}.png'}")
    result = {"table": table, "best": None, "final": None}
    if failed == trials:
        raise TuneError(f"every trial failed; the first: {table['error'].iloc[0]}")
    result["best"] = best = table["name"].iloc[0]
    if retrain:
        final = f"{prefix}-best"
        echo(f"tune: retraining {best}'s params at the full budget as {final}, "
             f"1 worker x {cores()} thread(s)")
        search = Search(root, model, poll=poll)
        search.queue(final, samples[best])
        e = search.run([final], 1)[final]
        if e["state"] != "success":
            raise TuneError(f"the retrain {final} failed: {failure_reason(e['log'])}")
        base = baseline_metrics(root)
        test_json = f"reports/{model}/metrics.json"
        result["final"] = {"name": final, "dev_acc": metric(e, train_json, "dev_acc"),
                           "test_acc": metric(e, test_json, "accuracy"),
                           "baseline_dev_acc": base.get(train_json, {}).get("dev_acc"),
                           "baseline_test_acc": base.get(test_json, {}).get("accuracy")}
    return result
