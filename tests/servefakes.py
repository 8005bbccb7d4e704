"""Models, drawings and a running `nn serve` server for the server and browser tests."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nn.engine import build
from nn.mnist.explain.trace import reference_copy
from nn.mnist import modelfile
from nn.mnist.serve import Server, load_models
from nn.mnist.training import TrainParams
from nn.model import Sequential
from nn.optim import Adam
from nn.train import fit
from conftest import png_header

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


# -- shared by the explain, backward and teach tests ----------------------------------------

def randomize_statistics(model: Sequential, rng: np.random.Generator) -> Sequential:
    """BatchNorm as after training (not the identity it starts as): running statistics and γ, β."""
    for layer in model.layers:
        if layer.buffers:
            c = len(layer.buffers["running_mean"])
            layer.buffers["running_mean"][:] = rng.normal(0, 0.5, c)
            layer.buffers["running_var"][:] = rng.uniform(0.3, 2.0, c)
            layer.params["gamma"][:] = rng.uniform(0.5, 1.5, c)
            layer.params["beta"][:] = rng.normal(0, 0.2, c)
    return model


def png_array(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def float64_copy(net: Sequential) -> Sequential:
    copy = reference_copy(net)
    for layer in copy.layers:
        layer.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
        layer.buffers = {k: v.astype(np.float64) for k, v in layer.buffers.items()}
    return copy


# -- shared by the serve and teach tests ----------------------------------------------------

def raw(server, data: bytes) -> bytes:
    """Send bytes as they are (for what http.client will not send) and return the whole answer."""
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


BLANK = png(Image.new("RGB", (280, 280), "white"))

BAD_POSTS = {  # name: (body, content type, query, status, start of the error)
    "empty body": (b"", "image/png", "", 400, "empty body"),
    "not an image": (b"hello, world", "image/png", "", 400, "not an image"),
    "truncated png": (drawing("7")[:300], "image/png", "", 400, "corrupt or truncated image"),
    "malformed json": (b'{"image": ', "application/json", "", 400, "malformed JSON"),
    "json without image": (b'{"model": "cnn"}', "application/json", "", 400, 'JSON body needs "image"'),
    "bad base64": (b'{"image": "data:image/png;base64,@@@"}', "application/json", "", 400, "malformed base64"),
    "data url not base64": (b"data:image/png,abc", "text/plain", "", 400, "data URL must be base64"),
    "unknown model": (drawing("7"), "image/png", "model=rnn", 400, "unknown model 'rnn' (known: mlp, cnn)"),
    "top_k zero": (drawing("7"), "image/png", "top_k=0", 400, "top_k must be an integer from 1 to 100"),
    "top_k text": (drawing("7"), "image/png", "top_k=five", 400, "top_k must be an integer"),
    "json model not a string": (b'{"image": "AAAA", "model": ["cnn"]}', "application/json", "", 400, "unknown model"),
    "too many pixels": (png_header(10_000, 6_000), "image/png", "", 413, "image too large: 10000x6000"),
    "blank": (BLANK, "image/png", "", 422, "blank image: no ink found"),
}


# -- the training view's tiny data and recipe (test_watch, test_teach_browser) -------------

TINY = [{"type": "Tiles", "parts": 2},
        {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": "same"},
        {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 4}, {"type": "Flatten"},
        {"type": "Linear", "in_features": 4 * 7 * 7, "out_features": 10},
        {"type": "Untile", "parts": 2}, {"type": "OuterSum"}]


def params(**kw) -> TrainParams:
    return TrainParams(**{"seed": 4, "epochs": 1, "batch_size": 16, "layers": TINY, "max_shift": 1,
                          "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05},
                          "schedule": {"name": "onecycle", "args": {"pct_start": 0.2}}, **kw})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Fake MNIST-100 splits: each pair's two digits are blobs whose place says the digit."""
    folder = tmp_path_factory.mktemp("mnist100")
    rng = np.random.default_rng(0)
    for split, n in (("train", 160), ("dev", 40), ("test", 10)):
        labels = rng.integers(0, 100, n)
        images = np.zeros((n, 28, 56), np.uint8)
        for i, y in enumerate(labels):
            for half, d in enumerate(divmod(int(y), 10)):
                r, c = divmod(d, 5)
                images[i, 4 + 12 * r:12 + 12 * r, 28 * half + 2 + 5 * c:28 * half + 6 + 5 * c] = 255
        np.savez(folder / f"{split}.npz", images=images, labels=labels)
    return folder
