"""Threads for the engine: one worker per core, and BLAS held at one thread while they run.

NN_THREADS=n caps the pool at n threads, and `apply_thread_budget` BLAS's threads alike (`nn
tune` gives each of its parallel trials cores / workers; `NN_THREADS=1 dvc queue start -j 2`
gives each queued experiment one core), so that parallel jobs do not oversubscribe.

numpy releases the GIL inside its loops and BLAS calls, so plain Python threads run im2col
copies, matrix products and elementwise passes on all cores at once. Every split below depends
only on the array sizes and the core count, so results are reproducible on one machine.
"""

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController

from nn.backend import DeviceError

# Arrays from this many numbers up are split over the threads for elementwise work (BatchNorm,
# pooling): those passes are memory-bound and gain from two threads on large arrays, where on
# small ones (the MLP's) the hand-over to the threads costs more (measured: docs/speed.md).
PARALLEL_MIN_SIZE = 1 << 19


class _Workers:
    """A lazily started thread pool, one thread per core, and the BLAS libraries' thread controls
    (found by threadpoolctl among the libraries this process has loaded)."""

    def __init__(self):
        self.pool = None
        self.blas = []
        self.size = 0
        self.single_blas = 0  # depth of single_threaded_blas() contexts
        self.pid = os.getpid()

    def get(self):
        if self.pid != os.getpid():  # a forked child inherits the pool object but not its threads
            self.__init__()
        if self.size == 0:
            # Only OpenBLAS: other BLAS builds have their own threading rules, and there the
            # convolutions simply run on one thread with threaded BLAS.
            self.blas = [lib for lib in ThreadpoolController().select(user_api="blas").lib_controllers
                         if lib.internal_api == "openblas"]
            self.size = thread_count() if self.blas else 1
            if self.size > 1:
                self.pool = ThreadPoolExecutor(self.size, "nn-fast")
        return self.pool


class ThreadsError(DeviceError, ValueError):
    """NN_THREADS is not a whole number >= 1: a setting of the machine, like a device."""


def thread_count() -> int:
    """Threads the engine may use: the cores this process may run on, capped by NN_THREADS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cap = os.environ.get("NN_THREADS", "").strip()
    if not cap:
        return cores
    if not cap.isdigit() or int(cap) < 1:
        raise ThreadsError(f"NN_THREADS={cap!r}: expected a whole number of threads >= 1")
    return min(cores, int(cap))


_WORKERS = _Workers()


def apply_thread_budget() -> int:
    """Hold this process to NN_THREADS threads, BLAS's and OpenMP's as well as the engine's
    pool, where it is set: one job's share of the cores when several run at once
    (`NN_THREADS=1 dvc queue start -j 2`, docs/team.md). Returns the threads the engine uses."""
    from threadpoolctl import threadpool_limits

    n = thread_count()
    if os.environ.get("NN_THREADS", "").strip():
        threadpool_limits(n)  # kept for the process: the job's budget
    return n


def parallel(part, n: int, min_per_worker: int, scratch) -> list:
    """Run part(lo, hi, scratch) over contiguous image ranges covering 0..n, one per thread when
    each thread gets at least min_per_worker images; results in order. Each thread gets its own
    `scratch.sub(i)`.

    Every convolution runs so, with BLAS switched to one thread meanwhile: faster than one
    thread driving multi-threaded BLAS (docs/speed.md; `kernels.NARROW_CHUNK_FACTOR` for the
    narrow ones).
    """
    pool = _WORKERS.get()
    workers = _WORKERS.size if pool is not None else 1
    if workers > 1 and n >= workers * min_per_worker:
        bounds = [n * i // workers for i in range(workers + 1)]
        with single_threaded_blas():  # the cores are busy with our threads
            futures = [pool.submit(part, bounds[i], bounds[i + 1], scratch.sub(i)) for i in range(workers)]
            return [f.result() for f in futures]
    return [part(0, n, scratch)]


def parallel_rows(part, m: int, size: int) -> list:
    """Run part(lo, hi) over contiguous row ranges covering 0..m, one per thread when the array
    (size numbers) is big enough; results in order."""
    pool = _WORKERS.get() if size >= PARALLEL_MIN_SIZE else None
    workers = _WORKERS.size if pool is not None else 1
    if workers > 1 and m >= workers:
        bounds = [m * i // workers for i in range(workers + 1)]
        with single_threaded_blas():
            futures = [pool.submit(part, bounds[i], bounds[i + 1]) for i in range(workers)]
            return [f.result() for f in futures]
    return [part(0, m)]


def uses_threads() -> bool:
    """Whether convolutions run on our threads (more than one core, OpenBLAS)."""
    return _WORKERS.get() is not None


@contextlib.contextmanager
def single_threaded_blas():
    """Hold BLAS at one thread. FastSequential wraps whole passes of a model with threaded
    convolutions in this: OpenBLAS's idle threads spin for a while after each multi-threaded
    call, and spinning next to our threads slowed the CNN step (docs/speed.md).

    The library's own set/get calls (through threadpoolctl's controllers) cost about 2 us,
    where `threadpool_limits` rescans the loaded libraries (25 us): this runs per layer call.
    """
    if _WORKERS.get() is None:
        yield
        return
    previous = [lib.get_num_threads() for lib in _WORKERS.blas]
    for lib in _WORKERS.blas:
        lib.set_num_threads(1)
    _WORKERS.single_blas += 1
    try:
        yield
    finally:
        _WORKERS.single_blas -= 1
        for lib, n in zip(_WORKERS.blas, previous):
            lib.set_num_threads(n)


def split_matmuls() -> bool:
    """Whether a large matmul should be split over our threads: only while BLAS is held at one
    thread (inside a CNN's pass). Otherwise OpenBLAS's own threads do it better."""
    return _WORKERS.single_blas > 0
