"""Time to accuracy: training recipes side by side, each through the train stage's own command.

    python benchmarks/time_to_accuracy.py --recipe before=93be17a --recipe now=params.yaml \\
        --models mlp cnn --seeds 3 --out docs/time-to-accuracy.csv

A recipe is NAME=PATH, a params file run with the code of this working tree, or NAME=REV, a git
revision whose code (nn/, stages/) and params.yaml both run, so that "before" is measured as it
was, engine included. For each seed round, for each model, every recipe runs in turn
(interleaved, so that a slow spell of the machine falls on all of them alike): the model's
section gets `seed` = its own seed + k for round k (the pipeline's seed and the next ones), then

    python -m stages.train --model M --data data/D --params P ...   (timed: the train seconds)
    python -m stages.evaluate --model ... --data data/D ...          (the test accuracy)

each in a scratch folder; nothing in data/, models/ or reports/ is touched. One CSV row per run
(recipe, model, seed, train seconds, best dev accuracy and its epoch, epochs run, test accuracy,
evaluate seconds) is appended as soon as the run ends, and a rerun skips the rows already there,
so an interrupted measurement resumes. Time it on an otherwise idle machine: the seconds are
wall-clock time of the whole stage command (Python start, data loading and dev scoring included).

docs/make_docs.py draws docs/figures/time-to-accuracy.png and the table in docs/results.md from
the CSV.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DATA = {"mlp": "data/mnist", "cnn": "data/mnist100"}  # as dvc.yaml's models map
COLUMNS = ["recipe", "model", "seed", "train_seconds", "dev_acc", "best_epoch", "epochs_run",
           "test_acc", "evaluate_seconds"]


def load_recipe(spec: str, scratch: Path) -> tuple[str, Path, str]:
    """NAME=PATH or NAME=REV -> (name, the folder whose nn/ and stages/ run it, params text).
    A revision's code is unpacked into `scratch`, beside a link to this tree's data/."""
    name, sep, where = spec.partition("=")
    if not sep or not name or not where:
        raise SystemExit(f"time_to_accuracy: error: --recipe {spec!r}: expected NAME=PATH or NAME=REV")
    if Path(where).is_file():
        return name, ROOT, Path(where).read_text()
    code = scratch / f"code-{name}"
    code.mkdir()
    archive = subprocess.run(["git", "archive", where, "nn", "stages", "params.yaml"], cwd=ROOT,
                             capture_output=True)
    if archive.returncode:
        raise SystemExit(f"time_to_accuracy: error: --recipe {spec!r}: no file {where} and no "
                         f"git revision ({archive.stderr.decode().strip()})")
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
    (code / "data").symlink_to(ROOT / "data")
    return name, code, (code / "params.yaml").read_text()


def with_seed(text: str, model: str, k: int) -> tuple[str, int]:
    """The params text with section `model`'s seed moved on by k, and that seed."""
    from io import StringIO

    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(text)
    doc[model]["seed"] = seed = int(doc[model]["seed"]) + k
    buf = StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue(), seed


def run_one(name: str, code: Path, text: str, model: str, k: int, scratch: Path) -> dict:
    params, seed = with_seed(text, model, k)
    folder = scratch / f"{name}-{model}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(params)
    py = sys.executable
    train = [py, "-m", "stages.train", "--model", model, "--data", DATA[model],
             "--out", str(folder / "model.npz"), "--history", str(folder / "history.csv"),
             "--metrics", str(folder / "train.json"), "--params", str(folder / "params.yaml")]
    start = time.perf_counter()  # `python -m` runs the stage of `code`, whose nn/ comes first
    done = subprocess.run(train, cwd=code, capture_output=True, text=True)
    train_seconds = time.perf_counter() - start
    (folder / "train.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"time_to_accuracy: {name} {model} seed {seed}: the train stage failed:\n"
                         f"{done.stderr[-2000:]}")
    scores = json.loads((folder / "train.json").read_text())
    evaluate = [py, "-m", "stages.evaluate", "--model", str(folder / "model.npz"),
                "--data", DATA[model], "--out", str(folder / "eval")]
    start = time.perf_counter()
    done = subprocess.run(evaluate, cwd=code, capture_output=True, text=True)
    evaluate_seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"time_to_accuracy: {name} {model} seed {seed}: the evaluate stage "
                         f"failed:\n{done.stderr[-2000:]}")
    test = json.loads((folder / "eval" / "metrics.json").read_text())
    return {"recipe": name, "model": model, "seed": seed,
            "train_seconds": f"{train_seconds:.1f}", "dev_acc": scores["dev_acc"],
            "best_epoch": scores["best_epoch"], "epochs_run": scores["epochs_run"],
            "test_acc": test["accuracy"], "evaluate_seconds": f"{evaluate_seconds:.1f}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", action="append", required=True, help="NAME=PARAMS (repeat)")
    ap.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=sorted(DATA))
    ap.add_argument("--seeds", type=int, default=3, help="rounds: the pipeline's seed and the next")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "time-to-accuracy.csv")
    ap.add_argument("--keep", type=Path, help="keep each run's folder (model, logs) under KEEP")
    args = ap.parse_args()
    done = set()
    if args.out.exists():
        with open(args.out, newline="") as f:
            done = {(r["recipe"], r["model"], int(r["seed"])) for r in csv.DictReader(f)}
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(",".join(COLUMNS) + "\n")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tta-", dir=args.keep) as tmp:
        recipes = [load_recipe(spec, Path(tmp)) for spec in args.recipe]
        for name, _, text in recipes:
            for model in args.models:
                if model not in (read_yaml_text(text) or {}):
                    raise SystemExit(f"time_to_accuracy: error: recipe {name} has no {model} section")
        for k in range(args.seeds):
            for model in args.models:
                for name, code, text in recipes:
                    seed = int(read_yaml_text(text)[model]["seed"]) + k
                    if (name, model, seed) in done:
                        continue
                    row = run_one(name, code, text, model, k, args.keep or Path(tmp))
                    with open(args.out, "a", newline="") as f:
                        csv.DictWriter(f, COLUMNS).writerow(row)
                    print(" ".join(f"{c}={row[c]}" for c in COLUMNS), flush=True)


def read_yaml_text(text: str) -> dict:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


if __name__ == "__main__":
    main()
