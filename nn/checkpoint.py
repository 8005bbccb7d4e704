"""Save and load a Sequential as one `.npz` file, never with pickle.

File format (version 1), the members of an uncompressed `.npz`:
  "header"        0-d str array: JSON {"format", "version", "spec", "input_shape", **fields}
  "state/<key>"   one array per entry of model.state_dict() ("state/0.W", "state/2.running_mean")
  "sha256"        0-d str array: hex sha256 over the header text and every state array
                  (name, dtype, shape and bytes, in sorted name order)
The application names its format ("mnist-nn model") and adds its own JSON header fields
(normalization, class names, ...); this module only checks that the required ones are there.
Every way a file can be wrong on load raises ModelFileError with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

from nn import engine as engines
from nn.files import DataFileError, atomic_open, read_npz
from nn.model import Sequential

VERSION = 1
_STATE = "state/"
_CORE = ("format", "version", "spec", "input_shape")  # header keys this module owns


class ModelFileError(Exception):
    """A model file is missing, corrupt, tampered with, of another version or architecture."""


@dataclass(frozen=True)
class Checkpoint:
    """What a model file says besides the weights: its input shape and the application's fields."""

    input_shape: tuple[int, ...]
    fields: dict
    version: int
    sha256: str


def _content_hash(header_text: str, state: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(header_text.encode("utf-8"))
    for key in sorted(state):
        a = np.ascontiguousarray(state[key])
        h.update(f"\0{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.data)
    return h.hexdigest()


def _json_default(obj):
    # numpy scalars (e.g. an accuracy computed with numpy) are common in meta
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _write(path: Path | BinaryIO, header: dict, state: dict[str, np.ndarray]) -> str:
    """Write header + state atomically (temp file in the same directory, fsync, rename), or
    into an open binary file (one of several outputs committed together). Returns the hash.
    """
    header_text = json.dumps(header, sort_keys=True, allow_nan=False, default=_json_default)
    digest = _content_hash(header_text, state)
    arrays = {_STATE + k: np.asarray(v) for k, v in state.items()}
    arrays["header"] = np.array(header_text)
    arrays["sha256"] = np.array(digest)
    if hasattr(path, "write"):
        np.savez(path, **arrays)  # no object arrays here, so nothing is pickled
        return digest
    with atomic_open(path) as f:
        np.savez(f, **arrays)
    return digest


def save(path: str | os.PathLike | BinaryIO, model: Sequential, *, format: str,
         input_shape: tuple[int, ...], fields: dict | None = None) -> str:
    """Write `model` (weights, spec) to one .npz with a JSON header; returns the sha256.

    format: the application's file type, checked on load; input_shape: one sample, e.g.
    (28, 56, 1); fields: JSON-serialisable header entries of the application's own.
    """
    fields = fields or {}
    clash = sorted(set(fields) & set(_CORE))
    if clash:
        raise ValueError(f"fields {clash} are reserved by the checkpoint header")
    header = {"format": format, "version": VERSION, "spec": model.spec,
              "input_shape": [int(d) for d in input_shape], **fields}
    return _write(path if hasattr(path, "write") else Path(path), header, model.state_dict())


def _read(path: Path) -> tuple[str, dict[str, np.ndarray], str]:
    """Read the raw members of a model file: (header text, state, stored hash)."""
    try:
        members = read_npz(path)
    except DataFileError as e:
        raise ModelFileError(str(e)) from None
    header, digest = members.pop("header", None), members.pop("sha256", None)
    if header is None or digest is None:
        raise ModelFileError(f"{path}: not a model file (no header or hash)")
    if header.dtype.kind != "U" or header.ndim or digest.dtype.kind != "U" or digest.ndim:
        raise ModelFileError(f"{path}: not a model file (malformed header or hash)")
    stray = [k for k in members if not k.startswith(_STATE)]
    if stray:
        raise ModelFileError(f"{path}: unexpected member(s) {stray}")
    state = {k[len(_STATE):]: v for k, v in members.items()}
    return str(header), state, str(digest)


def load(path: str | os.PathLike, *, format: str, required: Iterable[str] = (),
         engine: str = "fast") -> tuple[Sequential, Checkpoint]:
    """Rebuild the model saved at `path` on `engine` (see nn.engine).

    format: the file type expected; required: the application's header fields that must be
    present. Returns (model, Checkpoint); raises ModelFileError.
    """
    if engine not in engines.ENGINES:  # a caller's mistake, not the file's
        raise ValueError(f"engine must be one of {', '.join(engines.ENGINES)}, got {engine!r}")
    path = Path(path)
    header_text, state, digest = _read(path)
    try:
        header = json.loads(header_text)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != format:
        raise ModelFileError(f"{path}: not a model file (format is not {format!r})")
    # the version before the hash: another version may hash differently
    if header.get("version") != VERSION:
        raise ModelFileError(f"{path}: format version {header.get('version')!r}, "
                             f"this code reads version {VERSION}")
    if _content_hash(header_text, state) != digest:
        raise ModelFileError(f"{path}: content hash mismatch (file modified or corrupt)")
    missing = sorted({"spec", "input_shape", *required} - header.keys())
    if missing:
        raise ModelFileError(f"{path}: header lacks {missing}")
    shape = header["input_shape"]
    if not (isinstance(shape, list) and shape and
            all(type(d) is int and 1 <= d <= 1 << 16 for d in shape)):
        raise ModelFileError(f"{path}: input_shape {shape!r} is not a list of positive sizes")
    for key, value in state.items():
        if value.dtype.kind != "f":
            raise ModelFileError(f"{path}: weights {key!r} have dtype {value.dtype}, not float")
        if not np.isfinite(value).all():
            raise ModelFileError(f"{path}: weights {key!r} hold NaN or infinity")
    # the spec may declare layers far larger than the weights stored: build nothing bigger
    stored = sum(v.size for v in state.values())
    try:
        model = engines.build(header["spec"], np.random.default_rng(0), engine=engine)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(f"{path}: bad architecture spec ({e})") from None
    except MemoryError:
        raise ModelFileError(f"{path}: architecture spec too large to build "
                             f"({stored:,} weights stored)") from None
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise ModelFileError(f"{path}: weights do not match the architecture ({e})") from None
    input_shape = tuple(header["input_shape"])
    try:  # one zero image through the net: the spec must accept the declared input shape
        model.forward(np.zeros((1, *input_shape), np.float32), training=False)
    except (TypeError, ValueError, MemoryError) as e:
        raise ModelFileError(f"{path}: architecture does not accept input shape "
                             f"{input_shape} ({e})") from None
    fields = {k: v for k, v in header.items() if k not in _CORE}
    return model, Checkpoint(input_shape=input_shape, fields=fields,
                             version=header["version"], sha256=digest)
