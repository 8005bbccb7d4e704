"""Everything in docs/ that the code produces: the figures and the generated blocks of the pages.

    python docs/make_docs.py           # redraw docs/figures/*.png, rewrite every generated block
    python docs/make_docs.py --check   # exit 1 naming what is stale (tests/test_docs.py does this)

A page marks a generated block with `<!-- generated: NAME -->` ... `<!-- /generated -->`; NAME is a
key of TEXTS. Figures carry no text (captions live in the pages, where a test reads them), so their
pixels depend only on the code that computes them. The one input is docs/figures/digit.png, a
real MNIST digit (the first of the test set, a 7) saved once, so nothing here needs the data.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nn.mnist import preprocess  # noqa: E402
from nn.model import Sequential  # noqa: E402
from nn.schedules import make_schedule  # noqa: E402
from stages.common import read_yaml  # noqa: E402

DOCS = ROOT / "docs"
FIGURES = DOCS / "figures"
DIGIT = FIGURES / "digit.png"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]  # the front door's table is generated too
BLOCK = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)


# ------------------------------------------------------------------------------------ texts

def _params() -> dict:
    return read_yaml(ROOT / "params.yaml")


def _summary(model: str, input_shape: tuple) -> str:
    spec = _params()[model]["layers"]
    net = Sequential.from_spec(spec, np.random.default_rng(0))
    return "```text\n" + net.summary(input_shape) + "\n```\n"


def _dag() -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", "dag", "--mermaid"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    return "```mermaid\n" + out.strip().replace("\t", "    ") + "\n```\n"


def _stages() -> str:
    """What each stage reads and writes, as DVC expands dvc.yaml (foreach included)."""
    from dvc.repo import Repo

    rows = ["| stage | reads (data and params; code deps omitted) | writes |", "|---|---|---|"]
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            reads = [d.def_path for d in stage.deps
                     if not d.def_path.endswith(".py") and d.def_path not in ("nn/fast", "nn/gpu")]
            writes = [o.def_path for o in stage.outs]
            rows.append(f"| `{stage.addressing}` | {', '.join(f'`{r}`' for r in reads)} | "
                        f"{', '.join(f'`{w}`' for w in writes)} |")
    return "\n".join(rows) + "\n"


def _onecycle() -> str:
    """The CNN's learning rate over its run, sampled twice an epoch, as a Mermaid chart."""
    cnn, sizes = _params()["cnn"], _params()["mnist100"]
    steps_per_epoch = -(-sizes["train_size"] // cnn["batch_size"])
    total = cnn["epochs"] * steps_per_epoch
    sched = make_schedule(cnn["schedule"]["name"], cnn["optimizer"]["lr"], total, steps_per_epoch,
                          **cnn["schedule"]["args"])
    points = np.linspace(0, total - 1, 2 * cnn["epochs"] + 1).round().astype(int)
    xs = ", ".join(f'"{s / steps_per_epoch:.1f}"' for s in points)
    ys = ", ".join(f"{sched(int(s)) * 1e3:.3f}" for s in points)
    return ("```mermaid\nxychart-beta\n"
            f'    title "cnn: one-cycle, {total:,} steps ({cnn["epochs"]} epochs x {steps_per_epoch})"\n'
            f'    x-axis "epoch" [{xs}]\n'
            f'    y-axis "learning rate (x 1e-3)"\n'
            f"    line [{ys}]\n```\n")


def _results() -> str:
    """The committed reports of each model: metrics.json and the last row of history.csv."""
    import csv
    import json

    rows = ["| model | test accuracy | test loss | macro-F1 | parameters | epochs | last dev accuracy |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for model in ("mlp", "cnn"):
        m = json.loads((ROOT / "reports" / model / "metrics.json").read_text())
        with open(ROOT / "reports" / model / "history.csv", newline="") as f:
            last = list(csv.DictReader(f))[-1]
        rows.append(f"| {model} | {m['accuracy']:.2%} | {m['loss']:.4f} | {m['macro_f1']:.4f} | "
                    f"{m['params']:,} | {last['epoch']} | {float(last['dev_acc']):.2%} |")
    return "\n".join(rows) + "\n"


def _readme_results() -> str:
    """The README's table: each model's committed test metrics (metrics.json), its kept epoch
    (train.json) and its data (dvc.yaml's models map)."""
    import json

    datasets = {}
    for entry in read_yaml(ROOT / "dvc.yaml").get("vars") or []:
        if isinstance(entry, dict) and isinstance(entry.get("models"), dict):
            datasets.update(entry["models"])
    what = {"mnist": "one digit, 28×28", "mnist100": "a pair 00–99, 28×56"}
    rows = ["| model | data | test accuracy | macro-F1 | test images | parameters | epochs (best dev) |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for model, data in datasets.items():
        m = json.loads((ROOT / "reports" / model / "metrics.json").read_text())
        t = json.loads((ROOT / "reports" / model / "train.json").read_text())
        rows.append(f"| {model} | {data} ({what.get(data, data)}) | **{m['accuracy']:.2%}** | "
                    f"{m['macro_f1']:.4f} | {m['samples']:,} | {m['params']:,} | "
                    f"{t['epochs_run']} ({t['best_epoch']}) |")
    return "\n".join(rows) + "\n"


TIME_TO_ACCURACY = DOCS / "time-to-accuracy.csv"  # benchmarks/time_to_accuracy.py writes it


def _runs() -> list[dict]:
    """The rows of TIME_TO_ACCURACY, numbers as numbers."""
    import csv

    with open(TIME_TO_ACCURACY, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("train_seconds", "dev_acc", "test_acc", "evaluate_seconds"):
            r[key] = float(r[key])
    return rows


def _recipes(model: str) -> dict[str, list[dict]]:
    """recipe -> its runs of `model`, recipes in the order the CSV first names them."""
    out: dict[str, list[dict]] = {}
    for r in _runs():
        if r["model"] == model:
            out.setdefault(r["recipe"], []).append(r)
    return out


def _time_to_accuracy() -> str:
    """Per model and recipe: the train stage's seconds and the accuracies, mean over seeds."""
    rows = ["| model | recipe | seeds | train stage, s (min–max) | best dev | test | test per seed |",
            "|---|---|---|---:|---:|---:|---|"]
    for model in ("mlp", "cnn"):
        for recipe, runs in _recipes(model).items():
            secs = [r["train_seconds"] for r in runs]
            dev = sum(r["dev_acc"] for r in runs) / len(runs)
            tests = [r["test_acc"] for r in runs]
            rows.append(
                f"| {model} | {recipe} | {', '.join(r['seed'] for r in runs)} | "
                f"{sum(secs) / len(secs):.1f} ({min(secs):.1f}–{max(secs):.1f}) | {dev:.2%} | "
                f"**{sum(tests) / len(tests):.2%}** | {', '.join(f'{t:.2%}' for t in tests)} |")
    return "\n".join(rows) + "\n"


TEXTS = {
    "time-to-accuracy": _time_to_accuracy,
    "summary-cnn": lambda: _summary("cnn", (28, 56, 1)),
    "summary-mlp": lambda: _summary("mlp", (28, 28, 1)),
    "dag": _dag,
    "stages": _stages,
    "onecycle": _onecycle,
    "results": _results,
    "readme-results": _readme_results,
}


# ------------------------------------------------------------------------------------ figures

def digit() -> np.ndarray:
    """The saved MNIST digit: (28, 28) uint8, light ink on black."""
    return np.asarray(Image.open(DIGIT), dtype=np.uint8)


def photo() -> Image.Image:
    """The saved digit as a user might photograph it: dark blue ink on grey paper, 5x, off centre."""
    ink = Image.fromarray(digit().astype(np.float32) / 255, mode="F").resize((140, 140), Image.BICUBIC)
    ink = np.clip(np.asarray(ink), 0, 1)
    canvas = np.zeros((190, 250), np.float32)
    canvas[30:170, 80:220] = ink
    paper, pen = np.array([225, 220, 205], np.float32), np.array([30, 40, 110], np.float32)
    rgb = paper * (1 - canvas[..., None]) + pen * canvas[..., None]
    return Image.fromarray(np.rint(rgb).astype(np.uint8), mode="RGB")


def preprocess_steps() -> dict[str, np.ndarray]:
    """Each step of `preprocess` on the photo, computed by the module's own functions."""
    gray = preprocess.read_gray(photo())
    ink = preprocess.ink_map(gray)
    crop = ink[preprocess._ink_box(ink)]
    out = preprocess.normalize_digit(ink)
    return {"photo": np.asarray(photo()), "gray": gray, "ink": ink, "crop": crop, "out": out}


def _panel(a: np.ndarray, height: int, invert: bool = False) -> Image.Image:
    if a.dtype != np.uint8:
        a = np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)
    im = Image.fromarray(255 - a if invert else a).convert("RGB")
    w = max(1, round(im.width * height / im.height))
    return im.resize((w, height), Image.NEAREST if im.height < height / 2 else Image.BILINEAR)


def figure_preprocess() -> Image.Image:
    """photo | grey | ink map | crop to the ink | 28x28 result (20x20 box, centre) | MNIST's own."""
    s = preprocess_steps()
    h, scale = 168, 6  # 28 * 6
    panels = [_panel(s["photo"], h), _panel(s["gray"], h), _panel(s["ink"], h), _panel(s["crop"], h)]
    out = _panel(s["out"], h)
    draw = ImageDraw.Draw(out)
    rows, cols = np.flatnonzero(s["out"].any(axis=1)), np.flatnonzero(s["out"].any(axis=0))
    draw.rectangle((cols[0] * scale, rows[0] * scale, (cols[-1] + 1) * scale - 1,
                    (rows[-1] + 1) * scale - 1), outline=(230, 60, 60))
    c = preprocess.CENTRE * scale + scale // 2  # centre of pixel (14, 14)
    draw.line((c - 8, c, c + 8, c), fill=(60, 200, 60), width=2)
    draw.line((c, c - 8, c, c + 8), fill=(60, 200, 60), width=2)
    panels += [out, _panel(digit(), h)]
    gap = 12
    sheet = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) + 1), h + 2 * gap),
                      (255, 255, 255))
    x = gap
    for p in panels:
        sheet.paste(p, (x, gap))
        x += p.width + gap
    return sheet


def figure_time_to_accuracy() -> Image.Image:
    """Test accuracy against the train stage's seconds, every run of every recipe, one panel
    per model (nn.mnist.charts.xy_chart: points, one colour per recipe)."""
    from nn.mnist.charts import xy_chart

    panels = []
    for model in ("mlp", "cnn"):
        series = [(recipe, [r["train_seconds"] for r in runs], [100 * r["test_acc"] for r in runs])
                  for recipe, runs in _recipes(model).items()]
        panels.append(xy_chart(series, title=f"{model}: test accuracy against training time",
                               x_label="train stage, seconds", y_label="test %", lines=False,
                               size=(520, 360)))
    sheet = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, (i * panels[0].width, 0))
    return sheet


FIGURES_DRAWN = {"preprocess.png": figure_preprocess,
                 "time-to-accuracy.png": figure_time_to_accuracy}


# ------------------------------------------------------------------------------------ main

def same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one grey level: a float rounding that differs between BLAS builds may move a
    pixel across a rounding boundary; any change in what a figure shows moves far more."""
    return a.shape == b.shape and int(np.abs(a.astype(np.int16) - b).max(initial=0)) <= 1


def render(page: str) -> str:
    """The page's text with every generated block recomputed."""
    def fill(m):
        if m.group(2) not in TEXTS:
            raise KeyError(f"unknown generated block {m.group(2)!r}; known: {', '.join(TEXTS)}")
        return m.group(1) + TEXTS[m.group(2)]() + m.group(4)
    return BLOCK.sub(fill, page)


def stale() -> list[str]:
    """Names of the pages and figures whose committed content differs from what the code makes."""
    out = []
    for page in PAGES:
        text = page.read_text()
        if render(text) != text:
            out.append(str(page.relative_to(ROOT)))
    for name, draw in FIGURES_DRAWN.items():
        path = FIGURES / name
        if not path.exists() or not same_pixels(np.asarray(Image.open(path)), np.asarray(draw())):
            out.append(str(path.relative_to(ROOT)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files, change nothing")
    args = parser.parse_args()
    if args.check:
        bad = stale()
        for name in bad:
            print(f"stale: {name} (run python docs/make_docs.py)")
        return 1 if bad else 0
    for page in PAGES:
        text = page.read_text()
        new = render(text)
        if new != text:
            page.write_text(new)
            print(f"wrote {page.relative_to(ROOT)}")
    for name, draw in FIGURES_DRAWN.items():
        draw().save(FIGURES / name, optimize=False)
        print(f"wrote {(FIGURES / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
