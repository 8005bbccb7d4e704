"""Time the backward view and a teach step server side, on 100 drawings; or the training view.

    .venv/bin/python benchmarks/bench_backward.py [--cnn models/cnn.npz | --untrained] [-n 100]
    .venv/bin/python benchmarks/bench_backward.py --watch [--points 2]

The drawings are bench_explain.py's (MNIST-100 test pairs rendered as the page's canvas sends
them). Each is timed in-process through what the handler runs: preprocessing, one forward and
one backward of the reference layers (nn.mnist.explain.trace.backward), the PNGs and the JSON text;
then a teach request of one SGD step on it (a new private copy of the model each time, as a
page's first lesson: the copy, two backward passes and the step). --untrained times a
real-sized network, params.yaml's cnn.layers with fresh weights (seed 0), where no trained
model is at hand. After 5 untimed answers; prints the median, p95 and max in ms.

--watch starts the training view's run as `nn serve` does (params.yaml's cnn section on
data/mnist100, a point every 20 steps) and prints when each of its first --points points came
(the first is step 0: the data loaded, the network built, dev scored once), then stops it.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_explain import ROOT, drawings
from nn.engine import build
from nn.mnist import modelfile
from nn.mnist import serve as web
from nn.mnist.params import read_yaml


def untrained_cnn(folder: Path) -> Path:
    spec = read_yaml(ROOT / "params.yaml")["cnn"]["layers"]
    path = folder / "cnn.npz"
    modelfile.save(path, build(spec, np.random.default_rng(0)), normalization={"mean": 0.1307, "std": 0.3081},
                   input_shape=(28, 56, 1), classes=[f"{i:02d}" for i in range(100)])
    return path


def summary(name: str, times: list[float]) -> str:
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
    return f"{name}: median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms"


def watch(points: int) -> None:
    from nn.mnist.params import load_params
    from nn.mnist.training import TrainParams
    from nn.mnist.watch import Watch

    w = Watch(ROOT / "data" / "mnist100", load_params(TrainParams, "cnn", ROOT / "params.yaml"))
    t0 = time.monotonic()
    w.start()
    try:
        while len(w.view()["points"]) < points and w.view()["state"] == "running":
            time.sleep(0.01)
        for p in w.view()["points"][:points]:
            print(f"training view: step {p['step']} after {p['seconds']:.2f} s (dev accuracy {p['dev_acc']:.3f})")
    finally:
        w.close()
    print(f"stopped after {time.monotonic() - t0:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watch", action="store_true", help="time the training view's first points instead")
    ap.add_argument("--points", type=int, default=2)
    ap.add_argument("--cnn", default="models/cnn.npz")
    ap.add_argument("--untrained", action="store_true", help="params.yaml's cnn.layers, untrained")
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()
    if args.watch:
        watch(args.points)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = untrained_cnn(Path(tmp)) if args.untrained else Path(args.cnn)
        models = web.load_models({"cnn": path})
    sessions = web.Sessions()
    images = drawings("cnn", args.n)
    for png in images[:5]:
        web.predict(models, png, "cnn", 5, backward=True)
    backward, teach, sizes = [], [], []
    for png in images:
        t0 = time.perf_counter()
        body = web._json(web.predict(models, png, "cnn", 5, backward=True))
        t1 = time.perf_counter()
        web._json(web.teach(models, sessions, png, "cnn", "71", 1, 0.01, None))
        t2 = time.perf_counter()
        backward.append((t1 - t0) * 1e3)
        teach.append((t2 - t1) * 1e3)
        sizes.append(len(body))
    which = "params.yaml's cnn, untrained" if args.untrained else str(path)
    print(f"{len(images)} drawings, {which}, server side:")
    print(summary("  POST /api/backward", backward) + f"; answer median {statistics.median(sizes) / 1e3:.0f} kB")
    print(summary("  POST /api/teach (1 step, a new session)", teach))


if __name__ == "__main__":
    main()
