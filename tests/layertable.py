"""One row per layer type of nn.layers.LAYERS: its constructor arguments (as a spec gives them)
and a small input batch. tests/test_layer_table.py runs every check on every row, so a new layer
is one class plus one row here, and a check it fails names it."""

import inspect
from dataclasses import dataclass

import numpy as np

from nn.layers import LAYERS


@dataclass(frozen=True)
class Row:
    args: dict                  # constructor arguments, as in a spec (rng and dtype are not)
    input_shape: tuple          # a batch: (N, ...), NHWC for images
    scale: float = 1.0          # input = standard normal * scale + shift
    shift: float = 0.0
    # where the layer cannot be a model alone (a model file is checked on one example): the
    # layers before it in the checkpoint check, and that model's input batch
    before: tuple = ()
    model_input_shape: tuple = ()


LAYER_TABLE = {
    "Linear": Row({"in_features": 6, "out_features": 4}, (3, 6)),
    "Conv2d": Row({"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 1,
                   "padding": 1}, (2, 5, 6, 2)),
    "MaxPool2d": Row({"kernel_size": 2}, (2, 4, 6, 3)),
    "ReLU": Row({}, (3, 7)),
    "Dropout": Row({"p": 0.4}, (5, 6)),
    "Flatten": Row({}, (2, 3, 4, 2)),
    "BatchNorm1d": Row({"num_features": 4}, (6, 4), scale=3.0, shift=1.0),
    "BatchNorm2d": Row({"num_features": 3}, (2, 4, 5, 3), scale=3.0, shift=1.0),
    "OuterSum": Row({}, (5, 6)),
    "Tiles": Row({"parts": 2}, (2, 3, 4, 2)),
    "Untile": Row({"parts": 2}, (4, 3), before=({"type": "Tiles", "parts": 2}, {"type": "Flatten"}),
                  model_input_shape=(2, 3, 4, 1)),
}
NAMES = sorted(LAYERS)  # every layer type; test_layer_table fails for one without a row


def spec_of(name: str) -> dict:
    return {"type": name, **LAYER_TABLE[name].args}


def model_of(name: str) -> tuple[list[dict], tuple]:
    """A model with the layer (alone, or after the row's `before`) and its input batch shape."""
    row = LAYER_TABLE[name]
    return [*row.before, spec_of(name)], row.model_input_shape or row.input_shape


def layer_input(name: str, seed: int = 1, dtype=np.float64, shape: tuple = ()) -> np.ndarray:
    """The row's input batch (or one of `shape`): random normal values, none at ReLU's kink,
    none tied for a max. (Seed 1: with seed 0, BatchNorm1d's batch of 6 and the gradient check's
    random weights nearly cancel, and the relative error of a near-zero dx is 7e-4.)"""
    row = LAYER_TABLE[name]
    x = np.random.default_rng(seed).standard_normal(shape or row.input_shape) * row.scale + row.shift
    x[np.abs(x) < 1e-3] = 0.5
    return x.astype(dtype)


def float64_layer(name: str, seed: int = 0):
    """The row's reference layer with float64 parameters and arithmetic (for gradient checks)."""
    cls = LAYERS[name]
    takes = inspect.signature(cls.__init__).parameters
    extra = {k: v for k, v in (("rng", np.random.default_rng(seed)), ("dtype", np.float64))
             if k in takes}
    return cls(**LAYER_TABLE[name].args, **extra)


# Convolutions of every shape the reference and the fast engine must agree on (test_layers,
# test_fast): padding kinds, strides, even and rectangular kernels.
CONV_CASES = [  # (C_in, C_out, kernel, stride, padding, H, W)
    (2, 3, 3, 1, 0, 6, 7),
    (2, 3, 3, 1, 1, 5, 8),
    (3, 2, 3, 1, "same", 7, 5),
    (1, 4, 5, 1, "same", 6, 9),
    (2, 2, 5, 1, 2, 5, 5),
    (2, 3, 4, 1, "same", 6, 7),  # even kernel: asymmetric padding
    (2, 3, 3, 2, 1, 7, 9),
    (3, 2, 5, 2, 0, 9, 8),
    (2, 2, 3, 1, 4, 3, 4),  # padding >= kernel: general dx path
    (2, 3, (3, 1), (1, 2), (1, 0), 6, 7),
    (6, 4, 3, 1, 1, 5, 6),  # kw * C_in >= 16: im2col stored row-major rather than transposed
    (6, 3, 3, 2, 1, 7, 6),
]
