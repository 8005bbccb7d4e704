"""Which implementation runs a model: the readable reference layers or the fast CPU engine.

Both build the same parameters from the same spec and seed, and train to the same math; the
fast engine is the default for training and inference.
"""

import numpy as np

from nn.fast import FastSequential
from nn.model import Sequential

MODELS = {"fast": FastSequential, "reference": Sequential}
ENGINES = tuple(MODELS)


def build(spec: list[dict], rng: np.random.Generator, engine: str = "fast") -> Sequential:
    """A model from its spec on the chosen engine ("fast" or "reference")."""
    if engine not in MODELS:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return MODELS[engine].from_spec(spec, rng)
