"""Time `nn predict` from process start to output: one image, and 1,000 images in one call.

    .venv/bin/python benchmarks/bench_predict.py [--model models/cnn.npz] [--repeats 5]

Images are MNIST(-100) test images from data/ rendered as PNGs at 3x size, dark on light,
so the full preprocessing path runs. Prints the median of --repeats runs of each.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def render(images: np.ndarray, folder: Path) -> list[Path]:
    paths = []
    for i, a in enumerate(images):
        im = Image.fromarray(255 - a)
        path = folder / f"{i:04d}.png"
        im.resize((3 * im.width, 3 * im.height), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


def seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/cnn.npz")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("nn", path=str(Path(sys.executable).parent)) or "nn"
    data = ROOT / ("data/mnist100/test.npz" if "cnn" in args.model else "data/mnist/test.npz")
    with np.load(data) as d:
        images = d["images"][:1000]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in render(images, Path(tmp))]
        base = [exe, "predict", "--model", args.model]
        seconds(base + paths[:1])  # warm the file cache
        one = statistics.median(seconds(base + paths[:1]) for _ in range(args.repeats))
        many = statistics.median(seconds(base + paths) for _ in range(args.repeats))
    print(f"{args.model}: one image {one:.2f} s (target <= 0.5 s); "
          f"1,000 images {many:.2f} s (target <= 5 s); median of {args.repeats}")


if __name__ == "__main__":
    main()
