"""Classification metrics from a confusion matrix."""

from __future__ import annotations

import numpy as np


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: rows are actual classes, columns predicted classes."""
    actual, predicted = np.asarray(actual, np.int64), np.asarray(predicted, np.int64)
    flat = np.bincount(actual * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Support, precision, recall and F1 of every class (0 where undefined, as sklearn does)."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"support": support, "precision": precision, "recall": recall, "f1": f1}


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur (in truth or prediction)."""
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(per_class(cm)["f1"][present].mean())
