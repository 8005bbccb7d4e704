"""`nn tune`'s reports: every trial in a table, each param's importance, the optimisation history
and importance charts, written together to reports/tune/, and the time pruning saved."""

from __future__ import annotations

from pathlib import Path

from nn.mnist.search_space import SearchSettings
from nn.mnist.tune.study import dev_acc


def trials_table(study, settings: SearchSettings):
    """Every trial in order: number, state, dev accuracy (the best epoch's, or the last
    reported one of a pruned trial), epochs run, params, worker, failure."""
    import pandas as pd

    workers: dict[str, int] = {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        worker = t.user_attrs.get("worker")
        rows.append({"number": t.number, "state": t.state.name.lower(), "dev_acc": dev_acc(t),
                     "best_epoch": t.user_attrs.get("best_epoch"),
                     "epochs": len(t.intermediate_values),
                     "defaults": bool(t.user_attrs.get("defaults")),
                     **{path: t.params.get(path) for path in settings.space},
                     # workers numbered in order of appearance: no host name in a tracked file
                     "worker": workers.setdefault(worker, len(workers) + 1) if worker else None,
                     "error": t.user_attrs.get("error", "")})
    return pd.DataFrame(rows)


def importances(study) -> dict[str, float]:
    """Each param's share of the dev accuracy's variation over the complete trials
    (PED-ANOVA, Optuna's default evaluator: its fANOVA needs scikit-learn), or {} with too few."""
    import warnings

    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():  # "quantiles select the same trials": all equal, said so
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def charts(table, found: dict[str, float], model: str, study: str):
    """The optimisation history (dev accuracy per trial, best so far) and the importances."""
    from nn.mnist.charts import bar_chart, xy_chart

    done = table[table["state"] == "complete"]
    pruned = table[table["state"] == "pruned"]
    best = done["dev_acc"].cummax()
    defaults = table[table["defaults"] & (table["state"] == "complete")]
    history = xy_chart(
        [(f"{len(done)} complete", done["number"].tolist(), done["dev_acc"].tolist()),
         (f"{len(pruned)} pruned (last epoch)", pruned["number"].tolist(),
          pruned["dev_acc"].tolist()),
         ("best so far", done["number"].tolist(), best.tolist()),
         ("params.yaml's values", defaults["number"].tolist(), defaults["dev_acc"].tolist())],
        lines=[False, False, True, False], title=f"nn tune {model} ({study}): dev accuracy per trial",
        x_label="trial", y_label="dev accuracy")
    ranked = sorted(found.items(), key=lambda kv: -kv[1])
    importance = bar_chart(ranked or [("(too few complete trials)", 0.0)],
                           title=f"nn tune {model}: importance for dev accuracy (PED-ANOVA)",
                           x_label="share of the variation")
    return history, importance


def write_reports(study, settings: SearchSettings, model: str, out: Path):
    """out/MODEL.csv, MODEL-history.png and MODEL-importance.png, all three or none."""
    from nn.files import write_together
    from nn.mnist.pictures import png_bytes

    table = trials_table(study, settings)
    history, importance = charts(table, importances(study), model, study.study_name)
    paths = [out / f"{model}.csv", out / f"{model}-history.png", out / f"{model}-importance.png"]
    with write_together() as outputs:
        outputs.write_bytes(paths[0], table.to_csv(index=False, float_format="%.6g").encode())
        outputs.write_bytes(paths[1], png_bytes(history))
        outputs.write_bytes(paths[2], png_bytes(importance))
    return table, paths


def pruning_saved(study, budget_epochs: int) -> tuple[int, float]:
    """(pruned trials, seconds their unrun epochs would have taken at their own epoch pace)."""
    import optuna

    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    saved = 0.0
    for t in pruned:
        run = len(t.intermediate_values)
        if run and t.datetime_complete and t.datetime_start:
            pace = (t.datetime_complete - t.datetime_start).total_seconds() / run
            saved += pace * max(budget_epochs - run, 0)
    return len(pruned), saved
