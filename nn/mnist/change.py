"""`nn change-report`: what the workspace's results changed against a base revision, as the
Markdown a reviewer reads on a pull request.

DVC's own params and metrics diffs, the classes whose F1 moved most (reports/MODEL/per_class.csv
against the base's), and the pictures side by side: each model's accuracy curves, base and change
in one chart, and its confusion matrices. `dvc plots diff` writes the interactive version beside.
Nothing here is a stage's dependency: a change to it reruns no stage.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
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


PER_CLASS = ("class", "f1")  # the columns each table must have, numbers but for "class"
HISTORY = ("epoch", "dev_acc", "train_acc")


def read_table(data: bytes, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A report's CSV table with `columns` and at least one row; ChangeReportError naming the
    file (`name`) and what is wrong with it."""
    try:
        table = pd.read_csv(io.BytesIO(data), dtype={"class": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ChangeReportError(f"{name}: not a CSV table ({str(e).strip().splitlines()[0]})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ChangeReportError(f"{name}: no column {missing[0]!r} (has: "
                                f"{', '.join(map(str, table.columns))})")
    if table.empty:
        raise ChangeReportError(f"{name}: no rows, only a header")
    for column in columns:
        if column != "class" and not pd.api.types.is_numeric_dtype(table[column]):
            raise ChangeReportError(f"{name}: column {column!r} holds a value that is not a number")
    return table


def _read(root: Path, path: str) -> bytes | None:
    """The workspace's `path` (relative to root), None where it is not a file."""
    if not (root / path).is_file():
        return None
    try:
        return (root / path).read_bytes()
    except OSError as e:
        raise ChangeReportError(f"{path}: cannot read ({e.strerror or e})") from None


def _table_at(root: Path, rev: str, path: str, columns: tuple[str, ...]) -> pd.DataFrame | None:
    data = git_show(root, rev, path)
    return None if data is None else read_table(data, f"{rev}:{path}", columns)


def _tables(root: Path, base: str, name: str) -> tuple:
    """MODEL's per-class and history tables, the workspace's and BASE's (None where absent)."""
    per_class, history = f"reports/{name}/per_class.csv", f"reports/{name}/history.csv"
    data = _read(root, history)
    return (read_table(_read(root, per_class), per_class, PER_CLASS),
            _table_at(root, base, per_class, PER_CLASS),
            None if data is None else read_table(data, history, HISTORY),
            _table_at(root, base, history, HISTORY))


def check_out(out: Path) -> None:
    """--out checked before any work: a folder, or one that can be made, where files can be
    written; ChangeReportError otherwise."""
    from nn.files import check_writable

    if out.exists() and not out.is_dir():
        raise ChangeReportError(f"--out {out}: is a file, not a folder")
    try:
        check_writable(out / "README.md")
    except OSError as e:
        raise ChangeReportError(f"--out {out}: {e}") from None


def change_report(root: Path, base: str, out: Path, top: int = 5) -> Path:
    """Write OUT/README.md (with its pictures) and OUT/plots/: all the files, or none (every
    one is made first, then they replace the old ones together); the README's path."""
    from nn.files import os_reason, write_together

    check_out(out)
    if _run(root, "git", "rev-parse", "--git-dir").returncode:
        raise ChangeReportError("not in a git repository: the report compares the workspace "
                                "with a git revision")
    if _run(root, "git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").returncode:
        raise ChangeReportError(f"unknown git revision '{base}'")
    models = sorted(p.parent.name for p in (root / "reports").glob("*/per_class.csv"))
    if not models:
        raise ChangeReportError("no reports/*/per_class.csv in the workspace (make repro)")
    files = report_files(root, base, out, models, top)
    try:
        with write_together() as outputs:
            for path, data in files.items():
                outputs.write_bytes(out / path, data)
    except OSError as e:
        reason = f"{e.filename}: {os_reason(e)}" if e.filename and e.strerror else e
        raise ChangeReportError(f"--out {out}: cannot write {reason}") from None
    return out / "README.md"


def report_files(root: Path, base: str, out: Path, models: list[str], top: int) -> dict[str, bytes]:
    """Every file of the report, relative to OUT -> its bytes, made in memory (and DVC's plots
    in a temporary folder)."""
    from nn.mnist.pictures import png_bytes

    files: dict[str, bytes] = {}
    label = base.removeprefix("origin/")
    tables = {name: _tables(root, base, name) for name in models}  # a bad table: said before DVC
    params = _dvc(root, "params", "diff", base, "--md")
    metrics = _dvc(root, "metrics", "diff", base, "--md")
    md = [f"# This change against {label}", "",
          "## Params", "", _table_or(params, "No param changed."), "",
          "## Metrics", "", _table_or(metrics, "No metric changed."), ""]
    for name in models:
        per_class, old_per_class, history, old_history = tables[name]
        md += [f"## {name}", "", *_f1_section(f1_moves(old_per_class, per_class, top), label)]
        if history is not None:
            files[f"{name}-curves.png"] = png_bytes(_curves(name, old_history, history, label))
            md += [f"![{name} accuracy curves]({name}-curves.png)", ""]
        confusion = _read(root, f"reports/{name}/confusion.png")
        old = git_show(root, base, f"reports/{name}/confusion.png")
        if confusion is not None and old is not None:
            was, now = f"{name}-confusion-{label.replace('/', '-')}.png", f"{name}-confusion-change.png"
            files[was], files[now] = old, confusion
            md += [f"| {label} | change |", "| --- | --- |", f"| ![]({was}) | ![]({now}) |", ""]
    with tempfile.TemporaryDirectory(prefix="change-report-plots-") as plots:
        _dvc(root, "plots", "diff", base, "-o", plots)
        for folder, _, names in os.walk(plots):
            for file in names:
                path = Path(folder, file)
                files[f"plots/{path.relative_to(plots)}"] = path.read_bytes()
    md += [f"Interactive plots, {label} and change: `dvc plots diff {base}` "
           f"({out.name}/plots/index.html)."]
    files["README.md"] = ("\n".join(md) + "\n").encode()
    return files
