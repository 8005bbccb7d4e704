"""Which implementation runs a model, and where: the readable reference layers or the fast CPU
engine, on the CPU or (reference layers only, on CuPy arrays) on a GPU.

Both engines build the same parameters from the same spec and seed, and train to the same math;
the fast engine is the default for training and inference on the CPU. The fast engine also
has its own Adam and AdamW (`nn.fast.optim`: the same updates on one flat buffer).
"""

import numpy as np

from nn import optim
from nn.backend import CPU, Device
from nn.fast import FastSequential
from nn.fast.optim import OPTIMIZERS as FAST_OPTIMIZERS
from nn.model import Sequential

MODELS = {"fast": FastSequential, "reference": Sequential}
ENGINES = tuple(MODELS)


def build(spec: list[dict], rng: np.random.Generator, engine: str = "fast",
          device: Device = CPU) -> Sequential:
    """A model from its spec on the chosen engine ("fast" or "reference"), its parameters on
    `device` (nn.backend; the fast engine is CPU-only). The weights are drawn on the host from
    `rng` first, so a seed gives the same initial weights on every device."""
    if engine not in MODELS:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "fast" and device.name != "cpu":
        raise ValueError(f"engine 'fast' runs on the CPU only; device {device.name} needs "
                         f"engine 'reference'")
    model = MODELS[engine].from_spec(spec, rng)
    return model if device is CPU else model.to(device)


def optimizer_class(cls: type[optim.Optimizer], engine: str = "fast") -> type[optim.Optimizer]:
    """The class that runs the `nn.optim` optimiser `cls` for a model on `engine`: the fast
    engine's flat-buffer version where it has one (Adam, AdamW; same results, fewer passes),
    `cls` itself otherwise. Any `nn.optim` optimiser also works with either engine's models."""
    if engine not in MODELS:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return FAST_OPTIMIZERS.get(cls, cls) if engine == "fast" else cls
