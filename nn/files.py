"""Safe files: atomic writes, all of a stage's outputs committed together, and one checked
loader for `.npz` files that turns every way a file can be wrong into one line naming it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Mapping

import numpy as np

MAX_ARRAY_BYTES = 1 << 34  # 16 GiB: a member declaring more is refused before it is read
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")  # .<name>.<pid>.<random>.tmp


class DataFileError(ValueError):
    """A data file is missing, unreadable or not what the caller expects; one line naming it."""


# -- writing ------------------------------------------------------------------------------------

def _temp_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in `path`'s folder, named after `path` and this process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    return fd, tmp


def _remove_orphans(folder: Path) -> None:
    """Delete temporaries left in `folder` by writers that were killed (their process is gone)."""
    for entry in os.scandir(folder):
        m = _TEMP.match(entry.name)
        if m and not _alive(int(m["pid"])):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back Ctrl-C, SIGTERM and SIGHUP for a few steps that must not be split."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Outputs:
    """All of a stage's output files, each written to a temporary beside it (see `write_together`)."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, Path]] = []  # (temporary, final path)

    @contextlib.contextmanager
    def open(self, path: str | os.PathLike) -> Iterator[BinaryIO]:
        """A binary file that becomes `path` when the whole group commits."""
        path = Path(path)
        with _signals_held():  # a temporary is never created without being recorded
            fd, tmp = _temp_beside(path)
            self._pending.append((tmp, path))
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def write_bytes(self, path: str | os.PathLike, data: bytes) -> None:
        with self.open(path) as f:
            f.write(data)

    def save_npz(self, path: str | os.PathLike, **arrays: np.ndarray) -> None:
        """A compressed `.npz` (no pickles; byte-identical for identical arrays)."""
        with self.open(path) as f:
            np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})

    def _commit(self) -> None:
        # Every file is complete and on disk; every target is checked before the first rename
        # (a folder in a file's place would fail its rename after the others had landed); the
        # renames run with Ctrl-C and SIGTERM held back, so an interruption lands before the
        # first or after the last.
        check_writable(*(path for _, path in self._pending))
        with _signals_held():
            for tmp, path in self._pending:
                os.replace(tmp, path)
            self._pending = []

    def _discard(self) -> None:
        with _signals_held():
            for tmp, _ in self._pending:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            self._pending = []


@contextlib.contextmanager
def write_together() -> Iterator[Outputs]:
    """Write several files so that they all change or none does.

    Each file goes to a temporary beside its final path; when the block ends without an
    exception all are renamed into place, one after the other with signals held back. On any
    exception (Ctrl-C included) the temporaries are removed and the old files stay as they were.
    Only SIGKILL, which cannot be held back, landing inside the renames themselves (a few
    syscalls) can split the group; DVC then sees outputs that match no lock and reruns the stage.
    """
    outputs = Outputs()
    try:
        yield outputs
        folders = {path.parent for _, path in outputs._pending}
        outputs._commit()
    except BaseException:
        outputs._discard()
        raise
    for folder in folders:
        _fsync_dir(folder)  # makes the renames durable


def os_reason(e: OSError) -> str:
    """An OSError as the reason in a one-line message: the system's words in lower case ("no
    such file or directory"), or the message as it was raised (its paths keep their case)."""
    return e.strerror.lower() if e.strerror else str(e)


def check_writable(*paths: str | os.PathLike) -> None:
    """Raise OSError, naming the path, unless each of `paths` can be replaced by a new file:
    not a folder, and in a folder this process may write to (or may create)."""
    for path in map(Path, paths):
        if path.is_dir():
            raise IsADirectoryError(f"{path}: is a folder, not a file that can be replaced")
        folder = next((p for p in path.parents if p.exists()), Path("."))
        if not folder.is_dir():
            raise NotADirectoryError(f"{path}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{path}: the folder {folder} is not writable")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for binary writing; rename it over `path` on success.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    with write_together() as outputs, outputs.open(path) as f:
        yield f


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    with atomic_open(path) as f:
        f.write(data)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically write a compressed `.npz` (no pickles; byte-identical for identical arrays)."""
    with write_together() as outputs:
        outputs.save_npz(path, **arrays)


# -- reading ------------------------------------------------------------------------------------

def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One `.npy` member, its header checked before any of its data is read."""
    name = info.filename[:-len(".npy")]
    with z.open(info) as m:
        try:
            version = np.lib.format.read_magic(m)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read_header(m, max_header_size=1 << 16)
        except (ValueError, SyntaxError) as e:
            raise DataFileError(f"{path}: array {name!r} has a bad header ({e})") from None
        if dtype.hasobject:
            raise DataFileError(f"{path}: array {name!r} holds pickled Python objects (refused)")
        count = int(np.prod(shape, dtype=object))
        nbytes = count * dtype.itemsize
        if nbytes > MAX_ARRAY_BYTES or m.tell() + nbytes != info.file_size:
            raise DataFileError(f"{path}: array {name!r} declares shape {shape} "
                                f"({nbytes:,} bytes) but holds {info.file_size - m.tell():,}")
        data = bytearray(nbytes)
        if m.readinto(data) != nbytes:
            raise DataFileError(f"{path}: array {name!r} is truncated")
        m.read()  # to the end: the CRC is checked there
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file, never unpickling; DataFileError (one line) if it is bad.

    Refused: a missing path, a folder, an empty file, a bare `.npy`, anything not a zip, a bad
    CRC or truncation, a member that is not an array, pickled members, declared sizes that do
    not match the bytes (so a header claiming terabytes is caught before anything is allocated).
    """
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"{path}: is a folder, not a file")
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        if not head:
            raise DataFileError(f"{path}: empty file")
        if head == b"\x93NUMPY":
            raise DataFileError(f"{path}: a bare .npy array, not an .npz archive")
        if not zipfile.is_zipfile(path):
            if head.startswith(b"PK"):
                raise DataFileError(f"{path}: truncated or corrupt .npz (its zip directory is "
                                    f"missing)")
            raise DataFileError(f"{path}: not an .npz archive (not a zip file)")
        with zipfile.ZipFile(path) as z:
            arrays = {}
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise DataFileError(f"{path}: unexpected member {info.filename!r}")
                arrays[info.filename[:-len(".npy")]] = _read_member(z, info, path)
            return arrays
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise DataFileError(f"{path}: truncated or corrupt .npz ({e})") from None
    except OSError as e:
        raise DataFileError(f"{path}: cannot read ({os_reason(e)})") from None


@dataclass(frozen=True)
class Array:
    """What a caller expects of one array: dtype kinds and a shape.

    kinds: numpy kind letters ("u" unsigned, "i" signed, "f" float), or an exact dtype name
    ("uint8"); shape: ints, None (any size) or a name that must be the same size wherever it
    appears in one file ("n": as many labels as images); low/high: inclusive value bounds.
    """

    kinds: str
    shape: tuple[int | str | None, ...]
    low: float | None = None
    high: float | None = None


def load_npz(path: str | os.PathLike,
             arrays: Mapping[str, Array] | Iterable[str]) -> dict[str, np.ndarray]:
    """The named arrays of an `.npz` file, each checked against what the caller expects.

    `arrays` is a list of names (any dtype and shape) or {name: Array}. Float arrays must be
    finite. Raises DataFileError, one line naming the file, the array and the problem.
    """
    expect = dict(arrays) if isinstance(arrays, Mapping) else {k: None for k in arrays}
    found = read_npz(path)
    missing = [k for k in expect if k not in found]
    if missing:
        raise DataFileError(f"{path}: missing array(s) {', '.join(missing)} "
                            f"(has {', '.join(found) or 'none'})")
    sizes: dict[str, int] = {}
    for name, want in expect.items():
        a = found[name]
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise DataFileError(f"{path}: array {name!r} holds NaN or infinity")
        if want is None:
            continue
        if a.dtype.kind not in want.kinds and a.dtype.name != want.kinds:
            raise DataFileError(f"{path}: array {name!r} has dtype {a.dtype}, expected {want.kinds}")
        if a.ndim != len(want.shape):
            raise DataFileError(f"{path}: array {name!r} has shape {a.shape}, expected "
                                f"{len(want.shape)} dimensions {_shape_text(want.shape)}")
        for size, w in zip(a.shape, want.shape):
            if isinstance(w, str):
                if size == 0:
                    raise DataFileError(f"{path}: array {name!r} is empty (shape {a.shape})")
                w = sizes.setdefault(w, size)
            if w is not None and size != w:
                raise DataFileError(f"{path}: array {name!r} has shape {a.shape}, expected "
                                    f"{_shape_text(want.shape, sizes)}")
        if a.size and want.low is not None and a.min() < want.low:
            raise DataFileError(f"{path}: array {name!r} has value {a.min()} below {want.low:g}")
        if a.size and want.high is not None and a.max() > want.high:
            raise DataFileError(f"{path}: array {name!r} has value {a.max()} above {want.high:g}")
    return {k: found[k] for k in expect}


def _shape_text(shape: tuple, sizes: Mapping[str, int] = {}) -> str:
    return "(" + ", ".join("?" if w is None else str(sizes.get(w, w)) for w in shape) + ")"
