"""Stage `train`: fit one model (the params.yaml section named by --model) and save it."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from nn.backend import DeviceError, get_device
from nn.fast.threads import apply_thread_budget
from nn.files import DataFileError, check_writable, write_together
from nn.mnist.live import live_log, log_epoch
from nn.mnist.modelfile import save
from nn.mnist.params import load_params
from nn.mnist.training import TrainParams, load_split, subset, train_model
from nn.train import DivergedError, UselessModelError
from stages.common import fatal_errors


def dev_metrics(history: list[dict]) -> dict:
    """The training run's summary on the dev split (what a search ranks by): the best epoch's
    dev accuracy, that epoch and the number of epochs run; all of it is in history.csv too."""
    best = max(history, key=lambda r: r["dev_acc"])  # the first of equals
    return {"dev_acc": round(best["dev_acc"], 6), "best_epoch": best["epoch"],
            "epochs_run": len(history)}


def history_csv(history: list[dict]) -> bytes:
    import pandas as pd

    # No wall-clock time here: the file is tracked, so it must be the same on every run.
    columns = ["epoch", "loss", "train_acc", "dev_acc", "averaged", "lr"]
    return pd.DataFrame(history)[columns].to_csv(index=False, float_format="%.6g").encode()


app = typer.Typer(add_completion=False)


@app.command()
def main(
    model: Annotated[str, typer.Option(help="Model name: the params.yaml section to train with.")],
    data: Annotated[Path, typer.Option(help="Folder with train.npz and dev.npz.")],
    out: Annotated[Path, typer.Option(help="Where to write the trained model (.npz).")],
    history: Annotated[Path, typer.Option(help="Where to write the per-epoch history (.csv).")],
    metrics: Annotated[Path, typer.Option(help="Where to write the dev metrics (.json).")],
    params: Annotated[Path, typer.Option(help="Params file.")] = Path("params.yaml"),
    live: Annotated[Path | None, typer.Option(
        help="DVCLive's folder: each epoch logged as it ends (dvc exp show's step); removed "
             "if the stage fails.")] = None,
) -> None:
    stage = f"train@{model}"
    with fatal_errors(stage, DivergedError, UselessModelError, DeviceError, DataFileError, OSError,
                      outputs=(out, history, metrics)):
        check_writable(out, history, metrics)  # before the training, not after it
        p = load_params(TrainParams, model, params)
        device = get_device(p.device)  # before any work: no CuPy or no GPU stops the stage here
        threads = apply_thread_budget()  # NN_THREADS: this job's share of the cores
        x_train, y_train = subset(*load_split(data, "train"), p.train_size, p.seed)
        x_dev, y_dev = load_split(data, "dev")
        if x_dev.shape[1:] != x_train.shape[1:]:
            raise DataFileError(f"{data}: dev images are {x_dev.shape[1:]}, train images "
                             f"{x_train.shape[1:]}")
        start = time.perf_counter()
        try:
            with live_log(live) if live else contextlib.nullcontext() as log:
                trained = train_model(p, x_train, y_train, x_dev, y_dev, name=model,
                                      device=device, source=data / "train.npz", label=stage,
                                      on_epoch=partial(log_epoch, log) if log else None)
            scores = dev_metrics(trained.history)
            with write_together() as outputs:  # the model, its history and dev metrics, or none
                with outputs.open(out) as f:
                    save(f, trained.net, normalization=trained.normalization,
                         input_shape=trained.input_shape, classes=trained.classes,
                         meta={"model": model, "epochs_run": len(trained.history),
                               "best_dev_acc": scores["dev_acc"]})
                outputs.write_bytes(history, history_csv(trained.history))
                outputs.write_bytes(metrics, (json.dumps(scores, indent=2) + "\n").encode())
        except BaseException:  # all outputs or none: DVCLive's log of a run that wrote nothing too
            if live:
                shutil.rmtree(live, ignore_errors=True)
            raise
        print(f"{stage}: best dev accuracy {scores['dev_acc']:.4f} (epoch {scores['best_epoch']}) "
              f"-> {out}, {history}, {metrics}")
        print(f"{stage}: trained on the {p.engine} engine ({p.device}, {threads} thread(s)) in "
              f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    app()
