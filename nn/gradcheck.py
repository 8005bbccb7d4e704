"""Centred finite-difference gradient checks, float64 (cs231n's eval_numerical_gradient_array)."""

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f() / d x by centred differences; x is perturbed in place and restored. x: any shape, float64."""
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 arrays, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views: x must be contiguous
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = f()
        flat[i] = old - eps
        f_minus = f()
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||): 0 for equal arrays, robust to elements near zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def check_gradients(obj, x: np.ndarray, *, training: bool = True, seed: int = 0, eps: float = 1e-6,
                    before_forward: Callable[[], None] | None = None) -> dict[str, float]:
    """Relative errors of a layer's or a Sequential's analytic gradients against centred differences.

    The scalar checked is sum(forward(x) * r) with a fixed random r; returns {"x": err, name: err}
    for the input and every parameter. `before_forward` runs before each forward (e.g. to reseed a
    Dropout so every evaluation draws the same mask).
    """
    def forward():
        if before_forward is not None:
            before_forward()
        return obj.forward(x, training)

    out = forward()
    r = np.random.default_rng(seed).standard_normal(out.shape)
    dx = obj.backward(r)
    grads = {k: v.copy() for k, v in obj.grads.items()}

    def loss():
        return float(np.sum(forward() * r))

    errors = {"x": rel_error(dx, numerical_gradient(loss, x, eps))}
    for name, p in obj.params.items():
        errors[name] = rel_error(grads[name], numerical_gradient(loss, p, eps))
    return errors
