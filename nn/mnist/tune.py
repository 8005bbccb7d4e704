"""`nn tune`: a seeded random search run as real DVC experiments, then a retrain of the best.

Each trial is a named experiment queued with `dvc exp run --queue --name NAME -S path=value`,
so it shows in `dvc exp show`, compares with `dvc exp diff` and is kept with `dvc exp apply`.
DVC queues grids but does not sample or rank; nn.mnist.search_space samples, nn.mnist.ranking
ranks, by dev accuracy, never by test, and running, storing and committing are left to DVC
through nn.mnist.dvc_queue. This module runs the search from those three.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from nn.mnist.dvc_queue import (DONE, Search, TuneError, baseline_metrics, cores, experiments,
                                failure_reason, preflight)
from nn.mnist.ranking import accuracy_chart, metric, results_table
from nn.mnist.search_space import load_settings, sample, yaml_value


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
