"""The array module of an array: NumPy, or CuPy for arrays on an NVIDIA GPU.

The reference layers, losses and optimisers are written against `xp = array_module(x)` and use
only operations both modules have, so the same code runs on either.
"""

import numpy as np


def array_module(x):
    """`numpy` for NumPy arrays (and anything else), `cupy` for CuPy arrays."""
    if type(x).__module__.startswith("cupy"):
        import cupy  # only reached with a CuPy array, so CuPy is installed

        return cupy
    return np
