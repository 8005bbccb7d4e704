"""Models, drawings and a running `nn serve` server for the server and browser tests."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from nn.engine import build
from nn.mnist import modelfile
from nn.mnist.serve import Server, load_models
from nn.model import Sequential
from nn.optim import Adam
from nn.train import fit

ROOT = Path(__file__).resolve().parents[1]
NORM = {"mean": 0.1307, "std": 0.3081}
CLASSES = {28: [str(i) for i in range(10)], 56: [f"{i:02d}" for i in range(100)]}

MLP_SPEC = [{"type": "Flatten"}, {"type": "Linear", "in_features": 784, "out_features": 64},
            {"type": "ReLU"}, {"type": "Linear", "in_features": 64, "out_features": 10}]
CNN_SPEC = [{"type": "Conv2d", "in_channels": 1, "out_channels": 8, "kernel_size": 3, "padding": "same"},
            {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2},
            {"type": "Conv2d", "in_channels": 8, "out_channels": 16, "kernel_size": 3, "padding": "same"},
            {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
            {"type": "Linear", "in_features": 16 * 7 * 14, "out_features": 100}]

# The pipeline's two-digit CNN in miniature, with every layer the layers view draws (nn explain).
TILED_SPEC = [{"type": "Tiles", "parts": 2},
              {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": "same"},
              {"type": "BatchNorm2d", "num_features": 4}, {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2},
              {"type": "Conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": 3, "padding": "same"},
              {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
              {"type": "Linear", "in_features": 6 * 7 * 7, "out_features": 16},
              {"type": "BatchNorm1d", "num_features": 16}, {"type": "ReLU"}, {"type": "Dropout", "p": 0.3},
              {"type": "Linear", "in_features": 16, "out_features": 10},
              {"type": "Untile", "parts": 2}, {"type": "OuterSum"}]


def save(path: Path, model: Sequential, width: int) -> Path:
    modelfile.save(path, model, normalization=NORM, input_shape=(28, width, 1), classes=CLASSES[width])
    return path


def untrained_models(folder: Path) -> dict[str, Path]:
    """Random tiny models: the API's plumbing, not its accuracy."""
    rng = np.random.default_rng(0)
    return {"mlp": save(folder / "mlp.npz", build(MLP_SPEC, rng), 28),
            "cnn": save(folder / "cnn.npz", build(CNN_SPEC, rng), 56)}


def load_split(name: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    path = ROOT / "data" / name
    if not path.exists():
        return None
    with np.load(path) as d:
        return d["images"][:n], d["labels"][:n].astype(np.int64)


def trained_models(folder: Path) -> dict[str, Path] | None:
    """The pipeline's models if present, else tiny ones trained here on data/ (~10 s), else None.

    The tiny CNN reads ~80 % of MNIST-100 test pairs: tests use the ones it gets right as arrays.
    """
    if all((ROOT / f"models/{m}.npz").exists() for m in ("mlp", "cnn")):
        return {m: ROOT / f"models/{m}.npz" for m in ("mlp", "cnn")}
    mnist, pairs = load_split("mnist/train.npz", 6_000), load_split("mnist100/train.npz", 10_000)
    if mnist is None or pairs is None:
        return None
    rng = np.random.default_rng(3)
    paths = {}
    for name, spec, (x, y), width, epochs in (("mlp", MLP_SPEC, mnist, 28, 1), ("cnn", CNN_SPEC, pairs, 56, 2)):
        model = build(spec, rng)  # the fast engine: a few seconds on a laptop
        fit(model, Adam(3e-3), modelfile.normalize(x, NORM), y, epochs=epochs, batch_size=64, rng=rng)
        paths[name] = save(folder / f"{name}.npz", model, width)
    return paths


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def rendered(array: np.ndarray, scale: int = 3) -> bytes:
    """An MNIST(-100) array as a black-on-white PNG at `scale`x, as a user's drawing might be."""
    im = Image.fromarray(255 - array)
    return png(im.resize((scale * im.width, scale * im.height), Image.Resampling.BICUBIC))


STROKES = {  # each digit as polylines in a 100x140 cell, as a person draws it on the canvas
    "1": [[(50, 15), (50, 125)]],
    "4": [[(65, 15), (20, 90), (85, 90)], [(65, 15), (65, 125)]],
    "7": [[(15, 20), (85, 20), (40, 125)]],
}


def strokes(text: str, height: int = 280, gap: float = 0.25) -> list[list[tuple[float, float]]]:
    """Polylines of `text` in pixels of a canvas `height` high, digits `gap` of a digit's width apart."""
    s = height / 140
    return [[((gap + i * (1 + gap)) * 100 * s + x * s, y * s) for x, y in line]
            for i, ch in enumerate(text) for line in STROKES[ch]]


def drawing(text: str, height: int = 280, gap: float = 0.25, width: int | None = None) -> bytes:
    """`text` drawn in black strokes on white, as the page draws and sends it (by default just wide enough)."""
    width = width or round(height * (len(text) * (1 + gap) + gap) * 100 / 140)
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    for line in strokes(text, height, gap):
        d.line(line, fill="black", width=round(0.075 * height), joint="curve")
    return png(im)


@contextlib.contextmanager
def running_server(paths: dict[str, Path], engine: str = "fast", quiet: bool = True):
    """`nn serve`'s server on an ephemeral port of 127.0.0.1, in a thread; yields it."""
    server = Server(("127.0.0.1", 0), load_models(paths, engine=engine), quiet=quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- talking to it ------------------------------------------------------------------------

def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """-> (status, parsed JSON or raw bytes, response headers); a new connection per call."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        parsed = json.loads(data) if r.getheader("Content-Type") == "application/json" else data
        return r.status, parsed, dict(r.getheaders())
    finally:
        conn.close()


def post(server, body: bytes, model: str = "cnn", content_type: str = "image/png", **query):
    query = "&".join(f"{k}={v}" for k, v in {"model": model, **query}.items())
    return request(server, "POST", f"/api/predict?{query}", body, {"Content-Type": content_type})
