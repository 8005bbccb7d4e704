"""`nn change-report`: what the workspace's results changed against a base revision, as the
Markdown a reviewer reads on a pull request.

DVC's own params and metrics diffs, the classes whose F1 moved most (reports/MODEL/per_class.csv
against the base's), and the pictures side by side: each model's accuracy curves, base and change
in one chart, and its confusion matrices. `dvc plots diff` writes the interactive version beside.
Nothing here is a stage's dependency: a change to it reruns no stage.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd


class ChangeReportError(Exception):
    """The report cannot be made; str() is the one line to print."""


def _run(root: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=root, capture_output=True, text=False, stdin=subprocess.DEVNULL)


def _dvc(root: Path, *args: str) -> str:
    """DVC's output; a failure, or a revision it could not read (a warning, and a column of
    dashes that would look like a result), is a ChangeReportError."""
    proc = _run(root, sys.executable, "-m", "dvc", *args)
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    failed = [x for x in lines if x.startswith("ERROR: ") or "failed to load" in x]
    if proc.returncode != 0 or failed:
        first = (failed or lines or ["failed"])[0].removeprefix("ERROR: ").removeprefix("WARNING: ")
        raise ChangeReportError(f"dvc {args[0]} {args[1]}: {first}")
    return proc.stdout.decode().strip()


def git_show(root: Path, rev: str, path: str) -> bytes | None:
    """The bytes of `path` at `rev`, or None where it does not exist there."""
    proc = _run(root, "git", "show", f"{rev}:{path}")
    return proc.stdout if proc.returncode == 0 else None


def f1_moves(base: pd.DataFrame | None, head: pd.DataFrame, top: int) -> pd.DataFrame:
    """Up to `top` classes whose F1 moved, largest |delta| first: class, base, change, delta.
    With no base table, every class is new (base and delta NaN)."""
    head = head.set_index("class")["f1"].rename("change")
    if base is None:
        table = head.to_frame().assign(base=float("nan"))
    else:
        table = base.set_index("class")["f1"].rename("base").to_frame().join(head, how="outer")
    table["delta"] = table["change"] - table["base"]
    table = table[(table["delta"] != 0) | table["delta"].isna()]
    order = table["delta"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order, ["base", "change", "delta"]].head(top).reset_index()


def _f1_section(moves: pd.DataFrame, label: str) -> list[str]:
    if moves.empty:
        return ["No class's F1 moved.", ""]
    rows = [f"| {c} | {b:.4f} | {h:.4f} | {d:+.4f} |" for c, b, h, d in moves.itertuples(index=False)]
    return [f"Classes whose F1 moved most ({label} -> change):", "",
            f"| class | F1 {label} | F1 change | delta |", "| ---: | ---: | ---: | ---: |", *rows, ""]


def _curves(name: str, base: pd.DataFrame | None, head: pd.DataFrame, label: str):
    from nn.mnist.charts import xy_chart

    series = [(f"{label} dev", base["epoch"], base["dev_acc"])] if base is not None else []
    series.append(("change dev", head["epoch"], head["dev_acc"]))
    if base is not None:
        series.append((f"{label} train", base["epoch"], base["train_acc"]))
    series.append(("change train", head["epoch"], head["train_acc"]))
    return xy_chart(series, title=f"{name}: accuracy per epoch", x_label="epoch",
                    y_label="accuracy")


def _table_or(table: str, nothing: str) -> str:
    """DVC's Markdown table, or `nothing` where it has no rows (a header and a rule only)."""
    return table if len(table.splitlines()) > 2 else nothing


def _csv_at(root: Path, rev: str, path: str) -> pd.DataFrame | None:
    data = git_show(root, rev, path)
    return None if data is None else pd.read_csv(io.BytesIO(data), dtype={"class": str})


def change_report(root: Path, base: str, out: Path, top: int = 5) -> Path:
    """Write OUT/README.md (with its pictures) and OUT/plots/index.html; the README's path."""
    from nn.files import write_bytes
    from nn.mnist.pictures import png_bytes

    if _run(root, "git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").returncode:
        raise ChangeReportError(f"unknown git revision '{base}'")
    models = sorted(p.parent.name for p in (root / "reports").glob("*/per_class.csv"))
    if not models:
        raise ChangeReportError("no reports/*/per_class.csv in the workspace (make repro)")
    label = base.removeprefix("origin/")
    out.mkdir(parents=True, exist_ok=True)
    params = _dvc(root, "params", "diff", base, "--md")
    metrics = _dvc(root, "metrics", "diff", base, "--md")
    md = [f"# This change against {label}", "",
          "## Params", "", _table_or(params, "No param changed."), "",
          "## Metrics", "", _table_or(metrics, "No metric changed."), ""]
    for name in models:
        per_class = f"reports/{name}/per_class.csv"
        moves = f1_moves(_csv_at(root, base, per_class),
                         pd.read_csv(root / per_class, dtype={"class": str}), top)
        md += [f"## {name}", "", *_f1_section(moves, label)]
        history = root / "reports" / name / "history.csv"
        if history.is_file():
            chart = _curves(name, _csv_at(root, base, f"reports/{name}/history.csv"),
                            pd.read_csv(history), label)
            write_bytes(out / f"{name}-curves.png", png_bytes(chart))
            md += [f"![{name} accuracy curves]({name}-curves.png)", ""]
        confusion = root / "reports" / name / "confusion.png"
        old = git_show(root, base, f"reports/{name}/confusion.png")
        if confusion.is_file() and old is not None:
            was, now = f"{name}-confusion-{label.replace('/', '-')}.png", f"{name}-confusion-change.png"
            write_bytes(out / was, old)
            write_bytes(out / now, confusion.read_bytes())
            md += [f"| {label} | change |", "| --- | --- |", f"| ![]({was}) | ![]({now}) |", ""]
    _dvc(root, "plots", "diff", base, "-o", str((out / "plots").resolve()))
    md += [f"Interactive plots, {label} and change: `dvc plots diff {base}` "
           f"({out.name}/plots/index.html)."]
    write_bytes(out / "README.md", ("\n".join(md) + "\n").encode())
    return out / "README.md"
