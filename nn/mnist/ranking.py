"""`nn tune`'s results: the trials ranked by dev accuracy, and the chart of dev accuracy
against the param that matters most."""

from __future__ import annotations

from typing import Any

from nn.mnist.dvc_queue import failure_reason
from nn.mnist.search_space import Distribution


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
    """The numeric searched param whose rank correlation with dev accuracy is largest in size."""
    ok = table[table["status"] == "ok"]
    numeric = [p for p, d in space.items() if d.kind != "choice"]
    if len(ok) < 3 or not numeric:
        return numeric[0] if numeric else None
    # Spearman's rho by DataFrame.corr, which ranks in pandas (Series.corr's would need SciPy);
    # a param that did not vary has no correlation, counted as 0
    rho = ok[[*numeric, "dev_acc"]].astype(float).corr(method="spearman")["dev_acc"]
    size = rho.abs().fillna(0.0)
    return max(numeric, key=lambda p: size[p])


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
