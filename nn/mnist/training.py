"""Training a model as its params.yaml section describes it: the params models, the builders
they imply (network, optimiser, schedule, augmentation), the data's normalisation, and
`train_model`, which the train stage and the tests call; `nn lr-find` starts its range test
with the same `start_run`."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import numpy as np
from pydantic import AfterValidator, Field
from tqdm import tqdm

from nn import engine, optim
from nn.augment import random_warp, tile_cut, tile_join
from nn.backend import CPU, DEVICES, Device
from nn.engine import ENGINES
from nn.files import Array, DataFileError, load_npz
from nn.mnist.modelfile import normalize
from nn.mnist.params import Bool, Float, Int, Params, ParamsError, Str, finite, param_error
from nn.model import Sequential
from nn.schedules import make_schedule
from nn.train import TRANSFERS, fit


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
    augment_tiles: Bool = False    # a Tiles-first network: each tile shifted and warped on its own
    clip_norm: Annotated[Float | None, Field(gt=0)] = None
    early_stopping_patience: Annotated[Int | None, Field(ge=1)] = None
    ema: Annotated[Float | None, Field(gt=0, lt=1)] = None  # decay of a moving average of the
    # weights that dev is scored with and the model file keeps (nn.optim.WeightAverage)
    # Train on a seeded random subset of this many training images (null: all of them); the
    # dev set stays whole. `nn tune` uses it to make trials cheap.
    train_size: Annotated[Int | None, Field(ge=1)] = None


def make_augment(p: TrainParams, background: float):
    """The params' augmentation `(batch, rng) -> batch` (shift, then warp), or None. With
    `augment_tiles`, a network that starts with Tiles(parts) gets each tile (an MNIST-100
    pair's digits) shifted and warped on its own, as the network reads them."""
    if not (p.max_shift or p.rotate or p.scale or p.shear or p.elastic):
        return None
    first = p.layers[0] if p.layers else {}
    parts = first.get("parts", 2) if p.augment_tiles and first.get("type") == "Tiles" else 1

    def augment(xb: np.ndarray, gen: np.random.Generator) -> np.ndarray:
        if parts > 1:  # (N, H, parts*W, C) -> (N*parts, H, W, C), as nn.layers.Tiles cuts them
            xb = tile_cut(xb, parts)
        xb = random_warp(xb, gen, p.rotate, p.scale, p.shear, fill=background,
                         elastic=p.elastic, elastic_sigma=p.elastic_sigma, max_shift=p.max_shift)
        return tile_join(xb, parts) if parts > 1 else xb  # and back to whole images

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
    """(images (N, H, W) uint8, labels (N,) int64) of folder/SPLIT.npz, checked against SPLIT."""
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


def normalization_of(images: np.ndarray, source: str | Path) -> dict:
    """Mean and std of the raw training images (uint8, as `load_split` checks) on the 0..1
    scale: the network's input is (x / 255 - mean) / std (nn.mnist.modelfile.normalize), and the
    model file keeps both. Computed from the counts of the 256 values (MNIST-100: 4 -> 0.4 s
    against numpy's float64 passes over every pixel, the same numbers)."""
    counts = np.zeros(256, np.int64)
    flat = images.reshape(-1)
    for lo in range(0, flat.size, 1 << 22):  # bincount widens its input: a chunk at a time
        counts += np.bincount(flat[lo:lo + (1 << 22)], minlength=256)
    values = np.arange(256, dtype=np.float64)
    mean = counts @ values / flat.size
    std = np.sqrt(counts @ (values - mean) ** 2 / flat.size)
    norm = {"mean": float(mean / 255), "std": float(std / 255)}
    if not norm["std"] > 0:
        raise DataFileError(f"{source}: every training image pixel is the same")
    return norm


@dataclass
class Run:
    """The start of a run on `images`: the network and its optimiser built from one seeded
    generator, which then draws the batches, augmentations and dropout masks."""

    net: Sequential
    optimizer: optim.Optimizer
    rng: np.random.Generator
    normalization: dict
    augment: Callable | None
    summary: str


def start_run(p: TrainParams, name: str, images: np.ndarray, device: Device = CPU,
              source: str | Path = "train.npz") -> Run:
    """Network, optimiser, normalisation and augmentation for `images` (N, H, W) uint8, as
    section `name` of params.yaml describes them; a layer the images do not fit is a
    ParamsError naming it ('mlp.layers[4] (Dropout): ...')."""
    rng = np.random.default_rng(p.seed)
    try:
        net = engine.build(list(p.layers), rng, engine=p.engine, device=device)
        summary = net.summary((*images.shape[1:], 1))
    except ValueError as e:
        raise ParamsError(f"{name}.layers{_layer_message(e)}") from None
    opt = make_optimizer(p.optimizer, p.engine, device)
    norm = normalization_of(images, source)
    # Augmented pixels come from outside the image: the background, 0 before normalisation.
    augment = make_augment(p, np.float32(-norm["mean"] / norm["std"]))
    return Run(net, opt, rng, norm, augment, summary)


@dataclass
class Trained:
    """What `train_model` returns: the model and what its file keeps beside the weights."""

    net: Sequential
    history: list[dict]           # one record per epoch (nn.train.fit)
    normalization: dict           # {"mean", "std"} of the training images, 0..1 scale
    classes: list[str]            # "0".."9", or "00".."99"
    input_shape: tuple[int, ...]  # one example, no batch axis: (H, W, 1)


def train_model(p: TrainParams, x_train: np.ndarray, y_train: np.ndarray, x_dev: np.ndarray,
                y_dev: np.ndarray, *, name: str, device: Device = CPU,
                source: str | Path = "train.npz", label: str | None = None,
                on_epoch: Callable[[dict], None] | None = None) -> Trained:
    """Train a fresh network as section `name` of params.yaml describes it.

    x_train: (N, H, W) uint8 images, y_train: (N,) int labels, the same for dev. A setting the
    data does not fit (batch size, layer sizes, number of classes) is a ParamsError naming the
    key; `source` names the training file in messages. Prints one line per milestone and per
    epoch, prefixed with `label` (default `name`), and a progress bar on a terminal;
    `on_epoch(record)` then runs after each epoch's line (nn tune reports to its pruner there).
    """
    label = label or name
    if p.batch_size > len(y_train):
        raise ParamsError(f"{name}.batch_size: {p.batch_size} is more than the "
                          f"{len(y_train):,} training images in {source}")
    steps_per_epoch = -(-len(y_train) // p.batch_size)
    input_shape = (*x_train.shape[1:], 1)
    run = start_run(p, name, x_train, device, source)
    net = run.net
    try:
        schedule = make_schedule(p.schedule.name, p.optimizer.lr, p.epochs * steps_per_epoch,
                                 steps_per_epoch, **p.schedule.args)
    except ValueError as e:
        raise ParamsError(f"{name}.schedule: {e}") from None

    out_shape = net.predict_proba(np.zeros((1, *input_shape), np.float32)).shape
    num_classes, top = out_shape[-1], int(max(y_train.max(), y_dev.max()))
    if len(out_shape) != 2 or num_classes != top + 1:
        raise ParamsError(f"{name}.layers: the network has {num_classes} outputs "
                          f"{out_shape[1:]}, the data has {top + 1} classes (labels 0..{top})")
    classes = [f"{c:0{len(str(num_classes - 1))}d}" for c in range(num_classes)]
    x_train, x_dev = normalize(x_train, run.normalization), normalize(x_dev, run.normalization)
    print(f"{label}: {len(y_train):,} train / {len(y_dev):,} dev images {input_shape}, "
          f"{num_classes} classes, {net.num_params():,} parameters")
    print(run.summary)
    if p.ema is not None and p.epochs * steps_per_epoch < 3 / (1 - p.ema):
        print(f"{label}: note: {name}.ema {p.ema:g} forgets over {1 / (1 - p.ema):,.0f} steps "
              f"and this run takes {p.epochs * steps_per_epoch:,}: it averages nearly the whole "
              f"run, and each epoch keeps the trained weights where they score better on dev")

    # A bar only when stderr is a terminal (disable=None); logs and CI get the epoch lines.
    bar = tqdm(total=steps_per_epoch, desc=f"{label} epoch 1", unit="step", leave=False,
               disable=None)

    def on_step(step: int, total: int, loss: float) -> None:
        bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
        bar.update(1)

    def log_epoch(r: dict) -> None:
        bar.reset()
        bar.set_description(f"{label} epoch {r['epoch'] + 1}", refresh=False)
        tqdm.write(f"{label}: epoch {r['epoch']:3d}/{p.epochs}  loss {r['loss']:.4f}  "
                   f"train {r['train_acc']:.4f}  dev {r['dev_acc']:.4f}"
                   f"{' (average)' if r['averaged'] else ''}  lr {r['lr']:.2e}  "
                   f"{r['seconds']:.1f} s")  # the time goes to the log, not to history.csv
        sys.stdout.flush()
        if on_epoch is not None:
            on_epoch(r)

    # Overflow is caught as DivergedError, with its epoch and step, not as a numpy warning.
    with np.errstate(over="ignore", invalid="ignore"):
        history = fit(net, run.optimizer, x_train, y_train, x_dev, y_dev, epochs=p.epochs,
                      batch_size=p.batch_size, rng=run.rng, schedule=schedule,
                      augment=run.augment, label_smoothing=p.label_smoothing,
                      clip_norm=p.clip_norm, early_stopping_patience=p.early_stopping_patience,
                      ema=p.ema, device=device, transfer=p.transfer, on_epoch=log_epoch,
                      on_step=None if bar.disable else on_step)
    bar.close()
    return Trained(net, history, run.normalization, classes, input_shape)

