"""The IDX format of the MNIST files: read, write and validate.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), the dimensions as big-endian uint32, then the data in big-endian order.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from nn.files import write_bytes

# type code -> big-endian dtype
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}


class IdxError(ValueError):
    """A byte string is not a well-formed IDX file."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array in native byte order; IdxError names `name` and the fault."""
    if len(data) < 4:
        raise IdxError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _DTYPES:
        raise IdxError(f"{name}: bad IDX magic {data[:4].hex()} (not an IDX file)")
    if ndim == 0:
        raise IdxError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IdxError(
            f"{name}: IDX shape {shape} needs {expected} bytes, file has {len(data)}"
            + (" (truncated)" if len(data) < expected else " (trailing bytes)")
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array (uint8, int8, int16, int32, float32 or float64) as IDX bytes."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype)
    if code is None:
        raise IdxError(f"cannot write dtype {array.dtype} as IDX")
    if not 1 <= array.ndim <= 255:
        raise IdxError(f"cannot write a {array.ndim}-d array as IDX")
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file from disk (uncompressed)."""
    with open(path, "rb") as f:
        return parse_idx(f.read(), os.fspath(path))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Atomically write `array` as an IDX file."""
    write_bytes(path, idx_bytes(array))
