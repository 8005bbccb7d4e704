"""Watch it learn: a short, seeded training run in a process of its own, streaming what it learns.

    watch = Watch(folder, params, steps=600, every=20)   # data/mnist100, params.yaml's cnn section
    watch.start()          # one run at a time (WatchError if one runs)
    watch.view(since=0)    # {"state": "running", "points": [{"step", "loss", "dev_acc", "kernels",
                           #   "predictions"}, ...], "next": n, "test": {...}}
    watch.stop(); watch.close()

The run is the params section's recipe (its architecture, optimiser, schedule over `steps`
steps, augmentation, seed) on TRAIN_SIZE images of the folder's train split, by nn.train.fit, in a spawned process
held to one thread and a lower priority: the server's predictions never wait for it. Every
`every` steps (and at step 0) it sends a point: the mean training loss since the last point,
the accuracy on the first DEV_SIZE dev images, the first convolution's kernels as a picture and
the probabilities of the first TEST_SIZE test images. The same seed gives the same points.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_SIZE = 20_000  # training images of a run (a seeded subset): a short run needs no more, and
                     # loads and normalises in a third of the time and memory of MNIST-100's 60,000
DEV_SIZE = 1000  # dev images scored at each point
TEST_SIZE = 8    # the test images whose predictions the view follows
STOP_WAIT = 10   # seconds close() waits for the process before it is terminated


class WatchError(Exception):
    """A training-view request the state refuses (a second run, a stop with none running)."""


class _Done(Exception):
    """Raised from fit's on_step to end the run: its budget is spent, or it was asked to stop."""


def _run(folder: Path, params, steps: int, every: int, out, stop) -> None:
    """The training process: sends ("start", {...}), ("point", {...}) ..., ("end", {...}) to `out`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on `nn serve` reaches its group: the server stops us
    os.environ["NN_THREADS"] = "1"  # the engine's threads, read when it first starts them
    if hasattr(os, "nice"):
        os.nice(5)
    from threadpoolctl import threadpool_limits

    from nn.layers import Conv2d
    from nn.losses import softmax
    from nn.mnist.explain.atlas import kernel_atlas, paletted
    from nn.mnist.explain.web import data_url
    from nn.mnist.modelfile import normalize
    from nn.mnist.training import load_split, start_run, subset
    from nn.schedules import make_schedule
    from nn.train import DivergedError, evaluate, fit

    with threadpool_limits(1):
        try:
            x_train, y_train = subset(*load_split(folder, "train"), TRAIN_SIZE, params.seed)
            x_dev, y_dev = (a[:DEV_SIZE] for a in load_split(folder, "dev"))
            x_test, y_test = (a[:TEST_SIZE] for a in load_split(folder, "test"))
            run = start_run(params, "watch", x_train, source=folder / "train.npz")
            net = run.net
            classes = len(str(int(max(y_train.max(), y_dev.max()))))  # digits per label: "7", "71"
            xn_train, xn_dev, xn_test = (normalize(x, run.normalization) for x in (x_train, x_dev, x_test))
            conv = next((layer for layer in net.layers if isinstance(layer, Conv2d)), None)
            per_epoch = math.ceil(len(y_train) / params.batch_size)
            schedule = make_schedule(params.schedule.name, params.optimizer.lr, steps, per_epoch,
                                     **params.schedule.args)
            out.put(("start", {"test": [data_url(Image.fromarray(x)) for x in x_test],
                               "labels": [f"{int(y):0{classes}d}" for y in y_test],
                               "train": len(y_train), "dev": len(y_dev)}))
            losses: list[float] = []

            def point(step: int) -> None:
                _, acc = evaluate(net, xn_dev, y_dev)
                proba = softmax(net.forward(xn_test, training=False).astype(np.float64))
                w = None if conv is None else np.asarray(conv.params["W"])
                out.put(("point", {
                    "step": step, "loss": None if not losses else round(float(np.mean(losses)), 6),
                    "dev_acc": round(acc, 6), "lr": float(run.optimizer.lr),
                    "kernels": None if w is None else data_url(paletted(kernel_atlas(w, float(np.abs(w).max())))),
                    "predictions": [{"label": f"{int(p.argmax()):0{classes}d}", "probability": round(float(p.max()), 4)}
                                    for p in proba]}))
                losses.clear()

            done = 0

            def on_step(step: int, total: int, loss: float) -> None:
                nonlocal done
                done += 1
                losses.append(loss)
                if done % every == 0 or done == steps:
                    point(done)
                if done >= steps or stop.is_set():
                    raise _Done

            point(0)
            with np.errstate(over="ignore", invalid="ignore"):
                try:
                    fit(net, run.optimizer, xn_train, y_train, epochs=math.ceil(steps / per_epoch),
                        batch_size=params.batch_size, rng=run.rng, schedule=schedule, augment=run.augment,
                        label_smoothing=params.label_smoothing, clip_norm=params.clip_norm, on_step=on_step)
                except _Done:
                    pass
            out.put(("end", {"state": "stopped" if stop.is_set() and done < steps else "done"}))
        except (DivergedError, OSError, ValueError) as e:  # a bad data folder or params, a blow-up
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            out.put(("end", {"state": "failed", "error": str(e).splitlines()[0] if str(e) else type(e).__name__}))


class Watch:
    """The server's training view: at most one run at a time, in its own process."""

    def __init__(self, folder: Path, params, steps: int = 600, every: int = 20):
        if steps < 1 or every < 1:
            raise ValueError(f"steps and every must be >= 1, got {steps} and {every}")
        self.folder, self.params, self.steps, self.every = Path(folder), params, steps, every
        self._lock = threading.Lock()
        self._ctx = mp.get_context("spawn")  # not fork: the server has threads (and their locks)
        self._process = None
        self._stop = None
        self._reader = None
        self._state = "idle"
        self._run_info: dict = {}
        self._points: list[dict] = []
        self._error = None
        self._started = 0.0
        self.runs = 0

    def start(self) -> None:
        """Start a fresh run; WatchError if one is running."""
        with self._lock:
            if self._state == "running":
                raise WatchError("a training run is already running (one at a time): stop it first")
            out, self._stop = self._ctx.Queue(), self._ctx.Event()
            self._process = self._ctx.Process(target=_run, args=(self.folder, self.params, self.steps, self.every,
                                                                 out, self._stop), daemon=True, name="nn-watch")
            self._state, self._run_info, self._points, self._error = "running", {}, [], None
            self._started = time.monotonic()
            self.runs += 1
            self._process.start()
            self._reader = threading.Thread(target=self._read, args=(out, self._process, self.runs), daemon=True)
            self._reader.start()

    def _read(self, out, process, run: int) -> None:
        """Collect the process's messages until its end (or its death) for run number `run`."""
        while True:
            try:
                kind, body = out.get(timeout=0.2)
            except queue.Empty:
                if process.is_alive():
                    continue
                kind, body = "end", {"state": "failed", "error": f"the training process died (exit code {process.exitcode})"}
            with self._lock:
                if run != self.runs:
                    return
                if kind == "start":
                    self._run_info = body
                elif kind == "point":
                    self._points.append({**body, "seconds": round(time.monotonic() - self._started, 3)})
                else:
                    self._state, self._error = body["state"], body.get("error")
            if kind == "end":
                process.join(STOP_WAIT)
                return

    def stop(self) -> None:
        """Ask the run to stop after its current step; WatchError if none is running."""
        with self._lock:
            if self._state != "running":
                raise WatchError("no training run is running")
            self._stop.set()

    def view(self, since: int = 0) -> dict:
        """The run's state and its points from number `since` on."""
        with self._lock:
            return {"state": self._state, "steps": self.steps, "every": self.every, "seed": self.params.seed,
                    "error": self._error, "points": self._points[since:], "next": len(self._points),
                    **self._run_info}

    def close(self) -> None:
        """Stop the run, if any, and wait for its process (terminated after STOP_WAIT s)."""
        with self._lock:
            process, reader = self._process, self._reader
            if self._stop is not None:
                self._stop.set()
        if process is not None:
            process.join(STOP_WAIT)
            if process.is_alive():
                process.terminate()
                process.join()
        if reader is not None:
            reader.join()
