"""Which implementation runs a model, and where: the readable reference layers, or the engine
built for the device (the CPU engine `nn.fast`, the GPU engine `nn.gpu`).

All build the same parameters from the same spec and seed and train to the same math. The
engine ("fast") is the default: on the CPU it is NumPy with threads and fused passes, on a GPU
CuPy with its own kernels. The reference layers run on either device as written (on a GPU,
on CuPy arrays), which is what the engines are held to.
"""

import numpy as np

from nn import optim
from nn.backend import CPU, Device
from nn.fast import FastSequential
from nn.fast import optim as fast_optim
from nn.gpu import GpuSequential
from nn.gpu import optim as gpu_optim
from nn.model import Sequential

ENGINES = ("fast", "reference")


def model_class(engine: str, device: Device = CPU) -> type[Sequential]:
    """The Sequential class that runs `engine` on `device`."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "reference":
        return Sequential
    return GpuSequential if device.name == "gpu" else FastSequential


def build(spec: list[dict], rng: np.random.Generator, engine: str = "fast",
          device: Device = CPU) -> Sequential:
    """A model from its spec on the chosen engine ("fast" or "reference"), its parameters on
    `device` (nn.backend). The weights are drawn on the host from `rng` first, so a seed gives
    the same initial weights on every device and engine."""
    model = model_class(engine, device).from_spec(spec, rng)
    return model if device is CPU else model.to(device)


def optimizer(name: str, engine: str = "fast", device: Device = CPU, **kwargs) -> optim.Optimizer:
    """The optimiser called `name` ("sgd", "adam", "adamw") for a model on `engine` and `device`:
    on the GPU engine, Adam and AdamW update each parameter in one fused kernel; on the CPU
    engine, all parameters at once on one flat buffer (`nn.fast.optim`). Same results; any
    `nn.optim` optimiser also works with every engine's models."""
    classes = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}
    if name not in classes:
        raise ValueError(f"optimizer must be one of {', '.join(classes)}, got {name!r}")
    if engine == "fast" and name in gpu_optim.OPTIMIZERS:
        return (gpu_optim if device.name == "gpu" else fast_optim).OPTIMIZERS[name](**kwargs)
    return classes[name](**kwargs)
