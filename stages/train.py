"""Stage `train`: fit one model (the params.yaml section named by --model) and save it."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer
from pydantic import AfterValidator, Field
from tqdm import tqdm

from nn import engine, optim
from nn.augment import random_shift, random_warp
from nn.backend import CPU, DEVICES, Device, DeviceError, get_device
from nn.engine import ENGINES
from nn.files import Array, check_writable, load_npz, write_together
from nn.mnist.modelfile import normalize, save
from nn.model import Sequential
from nn.schedules import make_schedule
from nn.train import TRANSFERS, DivergedError, UselessModelError, fit
from stages.common import (Bool, Float, Int, Params, ParamsError, Str, fatal_errors, finite,
                           load_params, param_error)


class OptimizerParams(Params):
    name: Literal["sgd", "adam", "adamw"]
    lr: Annotated[Float, Field(gt=0)]
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0      # L2 (sgd, adam) or decoupled (adamw)
    momentum: Annotated[Float, Field(ge=0, lt=1)] = 0.9     # sgd only
    nesterov: Bool = False                                  # sgd only


class ScheduleParams(Params):
    name: Literal["constant", "step", "cosine", "onecycle", "plateau"]
    args: Annotated[dict[Str, Any], AfterValidator(finite)] = {}  # nn.schedules.make_schedule


def _check_layer(layer: dict) -> dict:
    p = layer.get("p", 0.5)
    if layer.get("type") == "Dropout" and type(p) in (int, float) and not 0 <= p < 1:
        raise param_error("p", f"{p!r} must be in [0, 1)")
    return layer


def _layer_message(e: ValueError) -> str:
    """A build error as it reads after '<model>.layers': 'layer 4 (Dropout): p must be ...'
    -> '[4] (Dropout): p must be ...'; one not about a layer -> ': ...'."""
    text, n = re.subn(r"^layer (\d+)", r"[\1]", str(e))
    return text if n else f": {text}"


def _buildable(layers: tuple[dict, ...]) -> tuple[dict, ...]:
    """Every layer's type and arguments, checked by building it (reference layers, any seed)."""
    try:
        Sequential.from_spec(list(layers), np.random.default_rng(0))
    except ValueError as e:
        key, _, rest = _layer_message(e).partition(": ")
        raise param_error(key, rest) if key else ValueError(rest) from None
    return layers


class TrainParams(Params):
    seed: Annotated[Int, Field(ge=0)]
    epochs: Annotated[Int, Field(ge=1)]
    batch_size: Annotated[Int, Field(ge=1)]
    optimizer: OptimizerParams
    schedule: ScheduleParams
    # the architecture as nn.model.Sequential.from_spec reads it, one dict per layer
    layers: Annotated[
        tuple[Annotated[dict[Str, Any], AfterValidator(finite), AfterValidator(_check_layer)], ...],
        AfterValidator(_buildable)]
    engine: Literal[ENGINES] = "fast"                      # nn.engine: "fast" or "reference"
    device: Literal[DEVICES] = "cpu"                       # "gpu": CuPy arrays (nn.backend)
    transfer: Literal[TRANSFERS] = "batch"                 # gpu: data copied per batch or once
    label_smoothing: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    max_shift: Annotated[Int, Field(ge=0, le=8)] = 0       # augmentation: random shifts, in pixels
    rotate: Annotated[Float, Field(ge=0, le=45)] = 0.0      # and random affine maps: degrees,
    scale: Annotated[Float, Field(ge=0, lt=1)] = 0.0        # +- fraction of the size,
    shear: Annotated[Float, Field(ge=0, le=45)] = 0.0       # degrees (nn.augment.random_warp),
    elastic: Annotated[Float, Field(ge=0, le=100)] = 0.0    # and elastic distortions: scale and
    elastic_sigma: Annotated[Float, Field(gt=0, le=28)] = 4.0  # smoothness, pixels (elastic_field)
    clip_norm: Annotated[Float | None, Field(gt=0)] = None
    early_stopping_patience: Annotated[Int | None, Field(ge=1)] = None
    ema: Annotated[Float | None, Field(gt=0, lt=1)] = None  # decay of a moving average of the
    # weights that dev is scored with and the model file keeps (nn.optim.WeightAverage)
    # Train on a seeded random subset of this many training images (null: all of them); the
    # dev set stays whole. `nn tune` uses it to make trials cheap.
    train_size: Annotated[Int | None, Field(ge=1)] = None


def make_augment(p: TrainParams, background: float):
    """The params' augmentation `(batch, rng) -> batch` (shift, then warp), or None."""
    if not (p.max_shift or p.rotate or p.scale or p.shear or p.elastic):
        return None

    def augment(xb: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        xb = random_shift(xb, p.max_shift, gen, fill=background)
        return random_warp(xb, gen, p.rotate, p.scale, p.shear, fill=background,
                           elastic=p.elastic, elastic_sigma=p.elastic_sigma)

    return augment


def make_optimizer(p: OptimizerParams, engine_name: str = "fast",
                   device: Device = CPU) -> optim.Optimizer:
    """The params' optimiser, as the engine runs it on the device (nn.engine.optimizer)."""
    if p.name == "sgd":
        return engine.optimizer("sgd", engine_name, device, lr=p.lr, momentum=p.momentum,
                                nesterov=p.nesterov, weight_decay=p.weight_decay)
    return engine.optimizer(p.name, engine_name, device, lr=p.lr, weight_decay=p.weight_decay)


# What a training split must hold: raw images (n, H, W) and one integer label each.
SPLIT = {"images": Array("uint8", ("n", None, None)), "labels": Array("iu", ("n",), low=0)}


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    d = load_npz(folder / f"{split}.npz", SPLIT)
    return d["images"], d["labels"].astype(np.int64)


def subset(x: np.ndarray, y: np.ndarray, size: int | None, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """`size` examples drawn without replacement (in their original order), or all of them."""
    if size is None or size >= len(y):
        return x, y
    # A generator of its own: the training run's stream is the same with or without a subset.
    keep = np.sort(np.random.default_rng([seed, len(y)]).choice(len(y), size, replace=False))
    return x[keep], y[keep]


def dev_metrics(history: list[dict]) -> dict:
    """The training run's summary on the dev split (what a search ranks by): the best epoch's
    dev accuracy, that epoch and the number of epochs run; all of it is in history.csv too."""
    best = max(history, key=lambda r: r["dev_acc"])  # the first of equals
    return {"dev_acc": round(best["dev_acc"], 6), "best_epoch": best["epoch"],
            "epochs_run": len(history)}


def history_csv(history: list[dict]) -> bytes:
    import pandas as pd

    # No wall-clock time here: the file is tracked, so it must be the same on every run.
    columns = ["epoch", "loss", "train_acc", "dev_acc", "lr"]
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
) -> None:
    stage = f"train@{model}"
    with fatal_errors(stage, DivergedError, UselessModelError, DeviceError, OSError, ValueError,
                      outputs=(out, history, metrics)):
        check_writable(out, history, metrics)  # before the training, not after it
        p = load_params(TrainParams, model, params)
        device = get_device(p.device)  # before any work: no CuPy or no GPU stops the stage here
        x_train, y_train = subset(*load_split(data, "train"), p.train_size, p.seed)
        x_dev, y_dev = load_split(data, "dev")
        if x_dev.shape[1:] != x_train.shape[1:]:
            raise ValueError(f"{data}: dev images are {x_dev.shape[1:]}, train images "
                             f"{x_train.shape[1:]}")
        if p.batch_size > len(y_train):
            raise ParamsError(f"{model}.batch_size: {p.batch_size} is more than the "
                              f"{len(y_train):,} training images in {data / 'train.npz'}")
        steps_per_epoch = -(-len(y_train) // p.batch_size)
        rng = np.random.default_rng(p.seed)
        input_shape = (*x_train.shape[1:], 1)
        try:
            net = engine.build(list(p.layers), rng, engine=p.engine, device=device)
            summary = net.summary(input_shape)
        except ValueError as e:
            raise ParamsError(f"{model}.layers{_layer_message(e)}") from None
        try:
            schedule = make_schedule(p.schedule.name, p.optimizer.lr, p.epochs * steps_per_epoch,
                                     steps_per_epoch, **p.schedule.args)
        except ValueError as e:
            raise ParamsError(f"{model}.schedule: {e}") from None
        opt = make_optimizer(p.optimizer, p.engine, device)

        # Normalization from the training images; it travels with the model file.
        normalization = {"mean": float(x_train.mean(dtype=np.float64) / 255),
                         "std": float(x_train.std(dtype=np.float64) / 255)}
        if not normalization["std"] > 0:
            raise ValueError(f"{data / 'train.npz'}: every training image pixel is the same")
        out_shape = net.predict_proba(np.zeros((1, *input_shape), np.float32)).shape
        num_classes, top = out_shape[-1], int(max(y_train.max(), y_dev.max()))
        if len(out_shape) != 2 or num_classes != top + 1:
            raise ParamsError(f"{model}.layers: the network has {num_classes} outputs "
                              f"{out_shape[1:]}, the data has {top + 1} classes (labels 0..{top})")
        classes = [f"{c:0{len(str(num_classes - 1))}d}" for c in range(num_classes)]
        x_train, x_dev = normalize(x_train, normalization), normalize(x_dev, normalization)
        print(f"{stage}: {len(y_train):,} train / {len(y_dev):,} dev images {input_shape}, "
              f"{num_classes} classes, {net.num_params():,} parameters")
        print(summary)

        augment = make_augment(p, np.float32(-normalization["mean"] / normalization["std"]))
        if p.ema is not None and p.epochs * steps_per_epoch < 3 / (1 - p.ema):
            print(f"{stage}: note: {model}.ema {p.ema:g} forgets over {1 / (1 - p.ema):,.0f} steps "
                  f"and this run takes {p.epochs * steps_per_epoch:,}: the average stays in its "
                  f"warm-up, over about the last tenth of the run")

        # A bar only when stderr is a terminal (disable=None); logs and CI get the epoch lines.
        bar = tqdm(total=steps_per_epoch, desc=f"{stage} epoch 1", unit="step", leave=False,
                   disable=None)

        def on_step(step: int, total: int, loss: float) -> None:
            bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            bar.update(1)

        def on_epoch(r: dict) -> None:
            bar.reset()
            bar.set_description(f"{stage} epoch {r['epoch'] + 1}", refresh=False)
            tqdm.write(f"{stage}: epoch {r['epoch']:3d}/{p.epochs}  loss {r['loss']:.4f}  "
                       f"train {r['train_acc']:.4f}  dev {r['dev_acc']:.4f}  lr {r['lr']:.2e}  "
                       f"{r['seconds']:.1f} s")  # the time goes to the log, not to history.csv
            sys.stdout.flush()

        start = time.perf_counter()
        # Overflow is caught as DivergedError, with its epoch and step, not as a numpy warning.
        with np.errstate(over="ignore", invalid="ignore"):
            records = fit(net, opt, x_train, y_train, x_dev, y_dev, epochs=p.epochs,
                          batch_size=p.batch_size, rng=rng, schedule=schedule,
                          augment=augment,
                          label_smoothing=p.label_smoothing, clip_norm=p.clip_norm,
                          early_stopping_patience=p.early_stopping_patience, ema=p.ema,
                          device=device, transfer=p.transfer, on_epoch=on_epoch, on_step=None if bar.disable else on_step)
        bar.close()
        scores = dev_metrics(records)
        with write_together() as outputs:  # the model, its history and its dev metrics, or none
            with outputs.open(out) as f:
                save(f, net, normalization=normalization, input_shape=input_shape,
                     classes=classes, meta={"model": model, "epochs_run": len(records),
                                            "best_dev_acc": scores["dev_acc"]})
            outputs.write_bytes(history, history_csv(records))
            outputs.write_bytes(metrics, (json.dumps(scores, indent=2) + "\n").encode())
        print(f"{stage}: best dev accuracy {scores['dev_acc']:.4f} (epoch {scores['best_epoch']}) "
              f"-> {out}, {history}, {metrics}")
        print(f"{stage}: trained on the {p.engine} engine ({p.device}) in "
              f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    app()
