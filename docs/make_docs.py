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

from nn import layers  # noqa: E402
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
    rows = ["| model | recipe | seeds | train stage, s (min–max) | best dev | test | test per seed | "
            "evaluate, s |", "|---|---|---|---:|---:|---:|---|---:|"]
    for model in ("mlp", "cnn"):
        for recipe, runs in _recipes(model).items():
            secs = [r["train_seconds"] for r in runs]
            dev = sum(r["dev_acc"] for r in runs) / len(runs)
            tests = [r["test_acc"] for r in runs]
            rows.append(
                f"| {model} | {recipe} | {', '.join(r['seed'] for r in runs)} | "
                f"{sum(secs) / len(secs):.1f} ({min(secs):.1f}–{max(secs):.1f}) | {dev:.2%} | "
                f"**{sum(tests) / len(tests):.2%}** | {', '.join(f'{t:.2%}' for t in tests)} | "
                f"{sum(r['evaluate_seconds'] for r in runs) / len(runs):.1f} |")
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


# The figures of the layers' pages (03, 04, 05): small arrays through the reference layers'
# own functions, drawn as grids of cells, one colour per window or per gradient path.

CELL, GAP = 26, 18
WINDOW_COLOURS = [(230, 60, 60), (40, 120, 220), (40, 170, 80), (220, 150, 20)]
WHITE = (255, 255, 255)


def _sheet(panels: list[Image.Image]) -> Image.Image:
    """Panels side by side on white, centred vertically."""
    h = max(p.height for p in panels) + 2 * GAP
    sheet = Image.new("RGB", (sum(p.width for p in panels) + GAP * (len(panels) + 1), h), WHITE)
    x = GAP
    for p in panels:
        sheet.paste(p, (x, (h - p.height) // 2))
        x += p.width + GAP
    return sheet


def _grid(values: np.ndarray, colours: np.ndarray | None = None, vmax: float | None = None) -> Image.Image:
    """A 2-D array as cells: grey by value (0 white, vmax black), or tinted by `colours` (H, W, 3)
    where given (the value sets the tint's strength); thin grey lines between cells."""
    h, w = values.shape
    vmax = float(np.abs(values).max()) or 1.0 if vmax is None else vmax
    strength = np.clip(np.abs(values) / vmax, 0, 1)[..., None]
    base = np.zeros((h, w, 3)) if colours is None else np.asarray(colours, float)
    rgb = np.rint(255 * (1 - strength) + base * strength).astype(np.uint8)
    im = Image.fromarray(rgb, "RGB").resize((w * CELL, h * CELL), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for i in range(h + 1):
        draw.line((0, min(i * CELL, h * CELL - 1), w * CELL, min(i * CELL, h * CELL - 1)), fill=(170, 170, 170))
    for j in range(w + 1):
        draw.line((min(j * CELL, w * CELL - 1), 0, min(j * CELL, w * CELL - 1), h * CELL), fill=(170, 170, 170))
    return im


def _outline(im: Image.Image, top: int, left: int, h: int, w: int, colour, inset: int = 2) -> None:
    ImageDraw.Draw(im).rectangle((left * CELL + inset, top * CELL + inset, (left + w) * CELL - 1 - inset,
                                  (top + h) * CELL - 1 - inset), outline=colour, width=3)


def figure_im2col() -> Image.Image:
    """A 5x5 input, three of its 3x3 windows outlined | nn.layers.im2col's matrix: one row per
    window (9 rows of 9), the outlined windows' rows framed in the same colours."""
    x = (np.arange(25.0).reshape(1, 5, 5, 1) * 7) % 25 + 1          # varied greys, no white cell
    cols = layers.im2col(x, 3, 3, 1, 1).reshape(9, 9)               # (Ho*Wo, kh*kw*C)
    left, right = _grid(x[0, :, :, 0], vmax=30), _grid(cols, vmax=30)
    for k, (i, j) in enumerate([(0, 0), (0, 2), (2, 1)]):
        _outline(left, i, j, 3, 3, WINDOW_COLOURS[k])
        _outline(right, i * 3 + j, 0, 1, 9, WINDOW_COLOURS[k])
    return _sheet([left, right])


def figure_col2im() -> Image.Image:
    """nn.layers.col2im of all-ones window gradients: each input pixel darker by the number of
    3x3 windows it lies in, stride 1 (counts up to 9) | stride 2 (up to 4), windows outlined."""
    panels = []
    for stride, size in ((1, 5), (2, 5)):
        ho = (size - 3) // stride + 1
        dx = layers.col2im(np.ones((1, ho, ho, 3, 3, 1)), (1, size, size, 1), (0, 0, 0, 0), stride, stride)
        panel = _grid(dx[0, :, :, 0], vmax=9)
        for k, (i, j) in enumerate([(0, 0), (0, ho - 1), (ho - 1, 0), (ho - 1, ho - 1)]):
            _outline(panel, i * stride, j * stride, 3, 3, WINDOW_COLOURS[k], inset=2 + 2 * k)
        panels.append(panel)
    return _sheet(panels)


def figure_maxpool() -> Image.Image:
    """MaxPool2d(2) on a 4x4 input: the input, each window's first maximum framed in its window's
    colour (the top-right window holds a tie) | dout, one colour per window | dx from the layer's
    backward: each gradient on its window's first maximum only."""
    x = np.array([[1, 3, 5, 5], [2, 0, 1, 2], [4, 1, 0, 6], [2, 2, 3, 1]], float).reshape(1, 4, 4, 1)
    pool = layers.MaxPool2d(2)
    pool.forward(x, training=True)
    dout = np.array([[1.0, 0.6], [0.8, 0.4]]).reshape(1, 2, 2, 1)
    dx = pool.backward(dout)[0, :, :, 0]
    tint = np.zeros((4, 4, 3))
    for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        tint[2 * i:2 * i + 2, 2 * j:2 * j + 2] = WINDOW_COLOURS[k]
    left = _grid(x[0, :, :, 0], vmax=8)
    for i, j in zip(*np.nonzero(dx)):
        _outline(left, i, j, 1, 1, tuple(int(c) for c in tint[i, j]))
    middle = _grid(dout[0, :, :, 0], colours=tint[::2, ::2], vmax=1)
    right = _grid(dx, colours=tint, vmax=1)
    return _sheet([left, middle, right])


def figure_batchnorm() -> Image.Image:
    """BatchNorm's three gradient paths for one channel of 8 values, as bars around a zero line:
    g = γ·dout (direct) | −mean(g) (through μ) | −x̂·mean(g·x̂) (through σ²) | their sum / σ̃,
    which is BatchNorm1d.backward's dx (the figure asserts it)."""
    x = np.array([[0.5], [2.0], [-1.0], [3.0], [1.0], [-2.0], [0.0], [4.0]])
    dout = np.array([[0.5], [1.0], [-0.75], [1.0], [-0.5], [-0.25], [0.75], [1.0]])
    bn = layers.BatchNorm1d(1, dtype=np.float64)
    bn.params["gamma"][...] = 1.5
    bn.forward(x, training=True)
    x_hat, inv_std = bn.cache
    dx = bn.backward(dout)
    g = dout * bn.params["gamma"]
    paths = [g, -g.mean(axis=0) + 0 * g, -x_hat * (g * x_hat).mean(axis=0)]
    assert np.allclose(inv_std * sum(paths), dx), "the three paths no longer add up to backward's dx"
    colours = [(40, 120, 220), (230, 60, 60), (40, 170, 80), (60, 60, 60)]
    bar, half = 14, 60                                           # bar width, pixels per unit
    vmax = max(float(np.abs(a).max()) for a in [*paths, dx])
    panels = []
    for values, colour in zip([*paths, dx], colours):
        im = Image.new("RGB", (len(values) * (bar + 4) + 4, 2 * half + 2), (246, 246, 246))
        draw = ImageDraw.Draw(im)
        for k, v in enumerate(values[:, 0]):
            top = half - round(v / vmax * half)
            x0 = 4 + k * (bar + 4)
            draw.rectangle((x0, min(top, half), x0 + bar - 1, max(top, half)), fill=colour)
        draw.line((0, half, im.width, half), fill=(120, 120, 120))
        panels.append(im)
    return _sheet(panels)


REPEAT = re.compile(r", (second|third|fourth|fifth) run$")  # a recipe measured again, another day


def figure_time_to_accuracy() -> Image.Image:
    """Test accuracy against the train stage's seconds, every run of every recipe, one panel
    per model (nn.mnist.charts.xy_chart: points, one colour per recipe; a recipe measured again
    on another day, "before, second run", is drawn in its first measurement's colour)."""
    from nn.mnist.charts import xy_chart

    panels = []
    for model in ("mlp", "cnn"):
        merged: dict[str, list[dict]] = {}  # "before, third run" is "before" measured again
        for recipe, runs in _recipes(model).items():
            merged.setdefault(REPEAT.sub("", recipe), []).extend(runs)
        series = [(recipe, [r["train_seconds"] for r in runs], [100 * r["test_acc"] for r in runs])
                  for recipe, runs in merged.items()]
        panels.append(xy_chart(series, title=f"{model}: test accuracy against training time",
                               x_label="train stage, seconds", y_label="test %", lines=False,
                               size=(520, 480)))
    sheet = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, (i * panels[0].width, 0))
    return sheet


FIGURES_DRAWN = {"preprocess.png": figure_preprocess, "im2col.png": figure_im2col,
                 "col2im.png": figure_col2im, "maxpool.png": figure_maxpool,
                 "batchnorm.png": figure_batchnorm, "time-to-accuracy.png": figure_time_to_accuracy}


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
