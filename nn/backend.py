"""Where arrays live: the array module of an array (NumPy, or CuPy on an NVIDIA GPU) and the
device a model trains on.

The reference layers, losses and optimisers are written against `xp = array_module(x)` and use
only operations both modules have, so the same code runs on either. A `Device` moves arrays
there (`asarray`); `to_numpy` brings any array back to the host. CuPy is imported only when a
GPU is asked for, so the CPU path never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

DEVICES = ("cpu", "gpu")


class DeviceError(RuntimeError):
    """The device asked for cannot be used here (no CuPy, no CUDA device); one line says which."""


def array_module(x):
    """`numpy` for NumPy arrays (and anything else), `cupy` for CuPy arrays."""
    if type(x).__module__.startswith("cupy"):
        import cupy  # only reached with a CuPy array, so CuPy is installed

        return cupy
    return np


def to_numpy(x, copy: bool = False) -> np.ndarray:
    """x's values as a NumPy array on the host: fetched from the GPU, else x itself (or a copy)."""
    if type(x).__module__.startswith("cupy"):
        return x.get()  # always a new host array
    return np.array(x) if copy else np.asarray(x)


@dataclass(frozen=True)
class Device:
    """Where a model's parameters, optimiser state and batches live: `xp` is its array module."""

    name: str
    xp: ModuleType

    def asarray(self, x):
        """x on this device (no copy when it is there already)."""
        return self.xp.asarray(x)

    def synchronize(self) -> None:
        """Wait for the device's queued work (for timing); a no-op on the CPU."""
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()


CPU = Device("cpu", np)


def get_device(name: str) -> Device:
    """The device called `name` ("cpu" or "gpu"), checked usable now.

    Raises DeviceError when "gpu" is asked for and CuPy is not installed, or CuPy finds no
    CUDA device (or no working driver), with a one-line message saying which.
    """
    if name == "cpu":
        return CPU
    if name != "gpu":
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    try:
        import cupy
    except ImportError as e:
        raise DeviceError(f"device gpu needs CuPy, which is not importable ({e}); "
                          f"install it with pip install -e '.[gpu]'") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as e:  # no driver, or the driver found no GPU
        raise DeviceError(f"device gpu: CuPy is installed but finds no CUDA device ({e})") from None
    if count < 1:
        raise DeviceError("device gpu: CuPy is installed but finds no CUDA device")
    return Device("gpu", cupy)
