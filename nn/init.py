"""Weight initialisation: He (Kaiming) and Glorot (Xavier), always from a passed-in Generator.

`fan_in` / `fan_out` count the inputs / outputs of one unit: `in_features` for a Linear layer,
`in_channels * kh * kw` for a convolution (PyTorch's convention).
"""

import numpy as np

INITS = ("he", "glorot")


def he_normal(shape, fan_in: int, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """N(0, 2 / fan_in): keeps the activation variance constant through ReLU layers."""
    std = np.sqrt(2.0 / fan_in)
    return (rng.standard_normal(shape) * std).astype(dtype)


def he_uniform(shape, fan_in: int, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / fan_in): the same variance as `he_normal`."""
    bound = np.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def glorot_uniform(shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                   dtype=np.float32) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def glorot_normal(shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                  dtype=np.float32) -> np.ndarray:
    """N(0, 2 / (fan_in + fan_out))."""
    std = np.sqrt(2.0 / (fan_in + fan_out))
    return (rng.standard_normal(shape) * std).astype(dtype)


def init_weight(kind: str, shape, fan_in: int, fan_out: int, rng: np.random.Generator,
                dtype=np.float32) -> np.ndarray:
    """The weight initialisation a layer's `init=` argument names: "he" (normal) or "glorot" (uniform)."""
    if kind == "he":
        return he_normal(shape, fan_in, rng, dtype)
    if kind == "glorot":
        return glorot_uniform(shape, fan_in, fan_out, rng, dtype)
    raise ValueError(f"init must be one of {INITS}, got {kind!r}")
