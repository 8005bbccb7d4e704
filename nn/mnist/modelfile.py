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
from nn.augment import affine_view, tile_cut, tile_join
from nn.checkpoint import ModelFileError
from nn.layers import Tiles
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


def tta_views(shift: int = 0, rotate: float = 0.0, scale: float = 0.0
              ) -> list[tuple[int, int, float, float]]:
    """Test-time augmentation's views, each (dy, dx, degrees, size): every whole-pixel shift in
    [-shift, shift]^2, at each rotation in (0, -rotate, +rotate) degrees and each size in
    (1, 1 - scale, 1 + scale), the rotations and sizes only where they are not 0."""
    turns = [0.0, -rotate, rotate] if rotate else [0.0]
    sizes = [1.0, 1 - scale, 1 + scale] if scale else [1.0]
    return [(dy, dx, t, s) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)
            for t in turns for s in sizes]


def tiles_of(net) -> int:
    """How many side-by-side images a network reads its input as: `parts` of a first Tiles
    layer (an MNIST-100 pair's two digits), else 1."""
    first = net.layers[0] if getattr(net, "layers", None) else None
    return first.parts if isinstance(first, Tiles) else 1


def predict_proba(net, images: np.ndarray, normalization: dict, tta_shift: int = 0,
                  tta_rotate: float = 0.0, tta_scale: float = 0.0) -> np.ndarray:
    """Class probabilities of raw images (N, H, W) uint8 -> (N, classes). With test-time
    augmentation, the mean over `tta_views(tta_shift, tta_rotate, tta_scale)`: copies of the
    images moved by whole pixels, as the training's random shifts moved them, and rotated and
    scaled about their centres, as its warps did (`nn.augment.affine_view`). A network that
    starts with Tiles sees each tile (each digit of a pair) moved about its own centre."""
    x = normalize(images, normalization)
    background = float(normalize(np.zeros((1, 1, 1), np.uint8), normalization)[0, 0, 0, 0])
    parts = tiles_of(net)
    views = tta_views(tta_shift, tta_rotate, tta_scale)
    if len(views) == 1:
        return net.predict_proba(x)
    if parts > 1:
        x = tile_cut(x, parts)
    total = None
    for dy, dx, degrees, size in views:
        v = affine_view(x, dy, dx, degrees, size, background)
        p = net.predict_proba(tile_join(v, parts) if parts > 1 else v)
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
