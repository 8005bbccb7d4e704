"""MNIST model files: a checkpoint (nn.checkpoint) plus the model's input contract.

Header fields besides the checkpoint's own: "normalization" ({"mean", "std"} of the training
images in [0, 1]), "classes" (class names or null) and "meta" (free JSON: epochs, accuracy).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from nn import checkpoint
from nn.checkpoint import ModelFileError
from nn.model import Sequential

FORMAT = "mnist-nn model"
_FIELDS = ("normalization", "classes", "meta")

__all__ = ["FORMAT", "ModelFileError", "ModelInfo", "load", "normalize", "save"]


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about its model, besides the weights."""

    normalization: dict
    input_shape: tuple[int, ...]
    classes: list[str] | None
    meta: dict
    version: int
    sha256: str


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(N, H, W) images moved down by dy and right by dx pixels (negative: up, left), the
    background (0) coming in at the edges; a new array."""
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def predict_proba(net, images: np.ndarray, normalization: dict, tta_shift: int = 0) -> np.ndarray:
    """Class probabilities of raw images (N, H, W) uint8 -> (N, classes). With tta_shift = s
    (test-time augmentation), the mean over (2s + 1)^2 views: the images moved by every
    (dy, dx) in [-s, s]^2, as the training's random shifts moved them."""
    views = [(dy, dx) for dy in range(-tta_shift, tta_shift + 1)
             for dx in range(-tta_shift, tta_shift + 1)]
    total = None
    for dy, dx in views:
        p = net.predict_proba(normalize(shifted(images, dy, dx), normalization))
        total = p if total is None else total + p
    return total / len(views)


def normalize(images: np.ndarray, normalization: dict) -> np.ndarray:
    """The model's input from raw images: (N, H, W) uint8 -> (N, H, W, 1) float32.

    (x / 255 - mean) / std with the file's normalization; training, evaluation and `nn predict`
    all go through here, so the network always sees the same arithmetic.
    """
    x = images.astype(np.float32)[..., None]
    x *= np.float32(1 / 255)
    x -= np.float32(normalization["mean"])
    x /= np.float32(normalization["std"])
    return x


def save(path: str | os.PathLike | BinaryIO, model: Sequential, *, normalization: dict,
         input_shape: tuple[int, ...], classes: list[str] | None = None,
         meta: dict | None = None) -> str:
    """Write `model` and its input contract to one .npz; returns the sha256.

    normalization: e.g. {"mean": 0.1307, "std": 0.3081}; input_shape: one image, e.g.
    (28, 56, 1); classes: optional class names; meta: optional JSON-serialisable extras.
    """
    if not isinstance(normalization, dict):
        raise TypeError(f"normalization must be a dict, got {type(normalization).__name__}")
    if classes is not None:
        classes = [str(c) for c in classes]
    return checkpoint.save(path, model, format=FORMAT, input_shape=input_shape,
                           fields={"normalization": normalization, "classes": classes,
                                   "meta": meta or {}})


def _is_number(x) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def _check_fields(path, model: Sequential, ckpt: checkpoint.Checkpoint) -> None:
    """The header's own fields must agree with each other and with the network."""
    norm, classes, meta = (ckpt.fields[k] for k in _FIELDS)
    if not (isinstance(norm, dict) and _is_number(norm.get("mean")) and _is_number(norm.get("std"))
            and norm["std"] > 0):
        raise ModelFileError(f"{path}: normalization {norm!r} is not a finite mean and a "
                             f"positive std")
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: meta is {type(meta).__name__}, not a mapping")
    out = model.forward(np.zeros((1, *ckpt.input_shape), np.float32), training=False)
    if out.ndim != 2:
        raise ModelFileError(f"{path}: the network outputs shape {out.shape[1:]}, not class scores")
    if classes is not None and (not isinstance(classes, list) or len(classes) != out.shape[1]
                                or not all(isinstance(c, str) for c in classes)):
        count = len(classes) if isinstance(classes, list) else type(classes).__name__
        raise ModelFileError(f"{path}: classes lists {count} names, the network has "
                             f"{out.shape[1]} outputs")


def load(path: str | os.PathLike, engine: str = "fast") -> tuple[Sequential, ModelInfo]:
    """Rebuild the model saved at `path` on `engine`. Returns (model, ModelInfo).

    Raises ModelFileError (one line, naming the file) for any fault of the file.
    """
    model, ckpt = checkpoint.load(path, format=FORMAT, required=_FIELDS, engine=engine)
    f = ckpt.fields
    _check_fields(path, model, ckpt)
    info = ModelInfo(normalization=f["normalization"], input_shape=ckpt.input_shape,
                     classes=f["classes"], meta=f["meta"], version=ckpt.version,
                     sha256=ckpt.sha256)
    return model, info
