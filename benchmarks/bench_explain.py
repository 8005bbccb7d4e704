"""Time the layers view server side: one POST /api/explain answer for each of 100 drawings.

    .venv/bin/python benchmarks/bench_explain.py [--model cnn] [--mlp models/mlp.npz] [--cnn models/cnn.npz] [-n 100]

The drawings are MNIST-100 test pairs (data/mnist100/test.npz; one-digit MNIST test images for
--model mlp) rendered black on white at 10x, as the page's canvas sends them (560x280 PNG).
Each is timed in-process through what the handler runs for it: preprocessing, the layers view's
forward and backward (nn.mnist.explain), the maps' PNGs and the JSON text. After 5 untimed
answers; prints the median, p95 and max in ms and the answer's median size.
"""

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nn.mnist import serve as web

ROOT = Path(__file__).resolve().parents[1]


def drawings(model: str, n: int) -> list[bytes]:
    path = ROOT / "data" / ("mnist100" if model == "cnn" else "mnist") / "test.npz"
    if not path.exists():
        sys.exit(f"{path} is missing: run `dvc repro` first")
    with np.load(path) as d:
        images = d["images"][:n]
    out = []
    for a in images:
        im = Image.fromarray(255 - a).resize((a.shape[1] * 10, a.shape[0] * 10), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    ap.add_argument("--mlp", default="models/mlp.npz")
    ap.add_argument("--cnn", default="models/cnn.npz")
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()
    models = web.load_models({"mlp": Path(args.mlp), "cnn": Path(args.cnn)})
    images = drawings(args.model, args.n)
    for png in images[:5]:
        web.predict(models, png, args.model, 5, explain=True)
    times, sizes = [], []
    for png in images:
        t0 = time.perf_counter()
        body = web._json(web.predict(models, png, args.model, 5, explain=True))
        times.append((time.perf_counter() - t0) * 1e3)
        sizes.append(len(body))
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
    print(f"POST /api/explain ({args.model}, {len(times)} drawings), server side: "
          f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms; answer median {statistics.median(sizes) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
