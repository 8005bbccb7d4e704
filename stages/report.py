"""Stage `report`: one Markdown page (reports/README.md) a reviewer reads in CI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from nn.files import DataFileError, load_npz, write_bytes
from nn.mnist.params import ParamsError, read_yaml
from stages.common import fatal_errors

HARDEST = 5  # classes listed per model
METRICS = ("accuracy", "loss", "macro_f1", "samples", "params")  # of metrics.json, on the page
PER_CLASS = ("class", "f1", "recall", "support")                # of per_class.csv
PARAMS = ("epochs", "batch_size", "seed", "layers", "optimizer.name", "optimizer.lr",
          "schedule.name")                                       # of a model's params section


def model_reports(folder: Path) -> tuple[dict, object]:
    """folder/metrics.json and folder/per_class.csv, with what the page shows from them; a
    file that is not JSON or CSV, or lacks a field, is a DataFileError naming it."""
    import pandas as pd

    path = folder / "metrics.json"
    try:
        metrics = json.loads(path.read_bytes())
    except ValueError as e:  # not UTF-8, not JSON
        raise DataFileError(f"{path}: not JSON ({e})") from None
    missing = [k for k in METRICS if not isinstance(metrics, dict) or k not in metrics]
    if missing:
        raise DataFileError(f"{path}: no {missing[0]!r}")
    path = folder / "per_class.csv"
    try:
        table = pd.read_csv(path, dtype={"class": str})
    except ValueError as e:  # empty, or not CSV (pandas' errors are ValueErrors)
        raise DataFileError(f"{path}: not a CSV table ({str(e).splitlines()[0]})") from None
    missing = [k for k in PER_CLASS if k not in table.columns]
    if missing:
        raise DataFileError(f"{path}: no column {missing[0]!r}")
    return metrics, table


def model_params(tree: dict, name: str, source: Path) -> dict:
    """Section `name` of the params, with every key the page shows (ParamsError naming one
    that is missing)."""
    for key in PARAMS:
        node = tree
        for part in (name, *key.split(".")):
            if not isinstance(node, dict) or part not in node:
                raise ParamsError(f"{source}: {name}.{key}: missing")
            node = node[part]
    return tree[name]


def dataset_sizes(folder: Path) -> dict[str, int]:
    return {split: len(load_npz(folder / f"{split}.npz", ("labels",))["labels"])
            for split in ("train", "dev", "test")}


def describe_layers(layers: list[dict]) -> str:
    parts = []
    for layer in layers:
        kind = layer["type"]
        args = [f"{v}" for k, v in layer.items() if k != "type"]
        parts.append(kind + (f"({', '.join(args)})" if args else ""))
    return " → ".join(parts)


def render(models: dict[str, dict], params: dict, datasets: dict[str, dict[str, int]]) -> str:
    """The page as Markdown. models: name -> {"dataset", "metrics", "per_class"}."""
    lines = ["# Results", "",
             "Produced by `dvc repro` (stage `report`); each model is evaluated on its held-out "
             "test split.", "",
             "| model | dataset | test accuracy | test loss | macro-F1 | test samples "
             "| parameters |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, m in models.items():
        x = m["metrics"]
        lines.append(f"| {name} | {m['dataset']} | {x['accuracy']:.2%} | {x['loss']:.4f} "
                     f"| {x['macro_f1']:.4f} | {x['samples']:,} | {x['params']:,} |")
    lines += ["", "## Hardest classes", "",
              f"The {HARDEST} classes with the lowest F1 on the test split.", ""]
    for name, m in models.items():
        worst = m["per_class"].sort_values(["f1", "class"]).head(HARDEST)
        cells = ", ".join(f"`{row['class']}` F1 {row['f1']:.3f} (recall {row['recall']:.3f}, "
                          f"n={int(row['support'])})" for _, row in worst.iterrows())
        lines.append(f"- **{name}**: {cells}")
    lines += ["", "## Pictures", ""]
    for name in models:
        lines += [f"- {name}: [confusion matrix]({name}/confusion.png) · "
                  f"[most confident mistakes]({name}/errors.png) · "
                  f"[training curves]({name}/history.csv) · "
                  f"[per-class table]({name}/per_class.csv)"]
    lines += ["- MNIST-100 examples: [mnist100_samples.png](mnist100_samples.png)", ""]
    for name in models:
        lines += [f"![{name} confusion matrix]({name}/confusion.png)", ""]
    lines += ["## Datasets", "", "| dataset | train | dev | test |", "|---|---:|---:|---:|"]
    for dataset, sizes in datasets.items():
        lines.append(f"| {dataset} | {sizes['train']:,} | {sizes['dev']:,} | {sizes['test']:,} |")
    lines += ["", "## Params", ""]
    for name in models:
        p = params[name]
        opt = p["optimizer"]
        sched = p["schedule"]
        args = ", ".join(f"{k}={v}" for k, v in (sched.get("args") or {}).items())
        lines += [f"**{name}**: {p['epochs']} epochs, batch {p['batch_size']}, seed {p['seed']}, "
                  f"{opt['name']} lr {opt['lr']} weight decay {opt.get('weight_decay', 0)}, "
                  f"schedule {sched['name']}{f' ({args})' if args else ''}, "
                  f"label smoothing {p.get('label_smoothing', 0)}, "
                  f"shift augmentation ±{p.get('max_shift', 0)} px{warps(p)}{kept(p)}", "",
                  f"`{describe_layers(p['layers'])}`", ""]
    return "\n".join(lines)


def warps(p: dict) -> str:
    """", then warps: rotate ±8°, scale ±8%, shear ±8°, elastic 15 (σ 4 px)" for the warps a
    model's params turn on."""
    parts = []
    if p.get("rotate"):
        parts.append(f"rotate ±{p['rotate']:g}°")
    if p.get("scale"):
        parts.append(f"scale ±{p['scale'] * 100:g}%")
    if p.get("shear"):
        parts.append(f"shear ±{p['shear']:g}°")
    if p.get("elastic"):
        sigma = f" (σ {p['elastic_sigma']:g} px)" if "elastic_sigma" in p else ""
        parts.append(f"elastic {p['elastic']:g}{sigma}")
    return f", then warps: {', '.join(parts)}" if parts else ""


def kept(p: dict) -> str:
    """"; dev scored with a moving average of the weights (decay 0.999); the best dev epoch kept
    (patience 2)" for what the params turn on, or ""."""
    parts = []
    if p.get("ema") is not None:
        parts.append(f"dev scored with a moving average of the weights (decay {p['ema']:g})")
    if p.get("early_stopping_patience") is not None:
        parts.append(f"the best dev epoch kept (patience {p['early_stopping_patience']})")
    return f"; {'; '.join(parts)}" if parts else ""


def parse_models(args: list[str]) -> dict[str, str]:
    """`--mlp mnist --cnn mnist100` (dvc.yaml's `${models}` unpacked) -> {"mlp": "mnist", ...}."""
    if len(args) % 2 or not args:
        raise ParamsError(f"expected --<model> <dataset> pairs, got {' '.join(args) or 'none'}")
    models = {}
    for flag, dataset in zip(args[::2], args[1::2]):
        name = flag.removeprefix("--")
        if not flag.startswith("--") or not re.fullmatch(r"\w+", name) or dataset.startswith("-"):
            raise ParamsError(f"expected --<model> <dataset>, got {flag} {dataset}")
        models[name] = dataset
    return models


app = typer.Typer(add_completion=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def main(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="Folder holding the <dataset>/ folders.")],
    reports: Annotated[Path, typer.Option(
        help="Folder holding <model>/metrics.json and per_class.csv.")],
    out: Annotated[Path, typer.Option(help="The Markdown page to write.")],
    params: Annotated[Path, typer.Option(help="Params file.")] = Path("params.yaml"),
) -> None:
    """Write the results page for the models given as `--<model> <dataset>` pairs, e.g.
    `--mlp mnist --cnn mnist100` (dvc.yaml passes its `models` map)."""
    with fatal_errors("report", DataFileError, OSError, outputs=(out,)):
        tree = read_yaml(params)
        models, datasets, p = {}, {}, {}
        for name, dataset in parse_models(ctx.args).items():
            p[name] = model_params(tree, name, params)
            datasets.setdefault(dataset, dataset_sizes(data / dataset))
            metrics, per_class = model_reports(reports / name)
            models[name] = {"dataset": dataset, "metrics": metrics, "per_class": per_class}
        write_bytes(out, render(models, p, datasets).encode())
        print(f"report: {', '.join(models)} -> {out}")


if __name__ == "__main__":
    app()
