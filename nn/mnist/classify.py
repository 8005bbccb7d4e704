"""A saved model as a digit reader: the one load and predict path of `nn predict` and `nn serve`.

    classifier = load_classifier("models/cnn.npz")   # checks the file and its input contract
                                                     # (engine="reference" for the readable layers)
    tops = rank(classifier, images, k=3)             # (N, 28, W) uint8 -> N ranked lists
    prediction_json(tops[0])                         # {"label", "probability", "top_k"}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nn.mnist import modelfile
from nn.model import Sequential

BATCH_SIZE = 256  # images per forward pass: bounds memory, not a hyperparameter


@dataclass(frozen=True)
class Classifier:
    """A loaded model and what its file says about its input."""

    path: Path
    net: Sequential
    info: modelfile.ModelInfo
    width: int  # 28: one digit (MLP on MNIST); 56: two digits (CNN on MNIST-100)
    classes: list[str]


def load_classifier(path: str | os.PathLike, engine: str = "fast") -> Classifier:
    """Load a model file on `engine` and check it reads 28x28 or 28x56 images; ModelFileError
    (one line) if not."""
    path = Path(path)
    try:
        net, info = modelfile.load(path, engine=engine)
    except modelfile.ModelFileError as e:
        message = str(e)  # modelfile's messages start with the path; make sure of it
        raise modelfile.ModelFileError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    shape = tuple(info.input_shape)
    if len(shape) != 3 or shape[0] != 28 or shape[1] not in (28, 56) or shape[2] != 1:
        raise modelfile.ModelFileError(
            f"{path}: input shape {shape} is neither 28x28x1 (one digit) nor 28x56x1 (two digits)")
    n_out = net.forward(np.zeros((1, *shape), np.float32), training=False).shape[1]
    classes = info.classes or [str(i) for i in range(n_out)]
    return Classifier(path=path, net=net, info=info, width=shape[1], classes=classes)


def rank(classifier: Classifier, images: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """The k most probable labels of each image, best first. images: (N, 28, W) uint8."""
    x = modelfile.normalize(images, classifier.info.normalization)  # (N, 28, W, 1)
    proba = classifier.net.predict_proba(x, batch_size=BATCH_SIZE)  # (N, classes)
    k = min(k, len(classifier.classes))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return [[(classifier.classes[i], float(p[i])) for i in row] for p, row in zip(proba, order)]


def prediction_json(top: list[tuple[str, float]]) -> dict:
    """One image's prediction as `nn predict --json` and `POST /api/predict` write it."""
    return {
        "label": top[0][0],
        "probability": round(top[0][1], 6),
        "top_k": [{"label": label, "probability": round(p, 6)} for label, p in top],
    }
