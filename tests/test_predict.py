"""`nn predict` (nn/mnist/cli.py): output formats, --show-input, bad inputs, MNIST round trips."""

from __future__ import annotations

import io
import json
import re
import typing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from conftest import check_one_line, digit_png, nn_predict, png_header
from nn.mnist import modelfile
from nn.mnist.cli import app
from nn.model import Sequential
from nn.optim import Adam
from nn.mnist.preprocess import preprocess
from nn.train import evaluate, fit

ROOT = Path(__file__).resolve().parents[1]
NORM = {"mean": 0.1307, "std": 0.3081}
TEXT_LINE = re.compile(  # "a.png: 7 (p=0.998)  top-3: 7 0.998, 3 0.001, 5 0.000"
    r"^(?P<file>.+): (?P<label>\S+) \(p=(?P<p>[01]\.\d{3})\)  top-(?P<k>\d+): (?P<top>.+)$"
)


def tiny_model(width: int, rng: np.random.Generator, hidden: int = 32) -> Sequential:
    classes = 10 if width == 28 else 100
    return Sequential.from_spec(
        [
            {"type": "Flatten"},
            {"type": "Linear", "in_features": 28 * width, "out_features": hidden},
            {"type": "ReLU"},
            {"type": "Linear", "in_features": hidden, "out_features": classes},
        ],
        rng,
    )


def save_model(path: Path, model: Sequential, width: int) -> Path:
    classes = [str(i) for i in range(10)] if width == 28 else [f"{i:02d}" for i in range(100)]
    modelfile.save(path, model, normalization=NORM, input_shape=(28, width, 1), classes=classes)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, Path]:
    """Untrained tiny models for one digit (width 28) and two digits (width 56)."""
    d = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    return {w: save_model(d / f"tiny{w}.npz", tiny_model(w, rng), w) for w in (28, 56)}


def draw(path: Path, digits: str = "7", size=(150, 110)) -> Path:
    """Black-on-white strokes: '7' is a bar and a diagonal, '1' an upright, one per 60 px."""
    im = Image.new("L", size, 255)
    d = ImageDraw.Draw(im)
    for i, ch in enumerate(digits):
        x = 15 + 60 * i
        if ch == "7":
            d.line([(x, 15), (x + 40, 15), (x + 12, 95)], fill=0, width=7)
        else:
            d.line([(x + 20, 15), (x + 20, 95)], fill=0, width=7)
    im.save(path)
    return path


def run(*args: str):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


# --- output ---------------------------------------------------------------------------


def test_text_output_one_line_per_image(tmp_path, models):
    a, b = draw(tmp_path / "a.png"), draw(tmp_path / "b.png", "1")
    r = run(a, b, "--model", models[28], "--top-k", "4")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and r.stderr == ""
    for line, path in zip(lines, (a, b)):
        m = TEXT_LINE.match(line)
        assert m and m["file"] == str(path) and m["k"] == "4"
        top = [(lab, float(p)) for lab, p in (item.split() for item in m["top"].split(", "))]
        assert len(top) == 4 and top[0][0] == m["label"] and top[0][1] == float(m["p"])
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)


def test_both_engines_give_the_same_answer(tmp_path, models):
    a = draw(tmp_path / "a.png")
    fast = run(a, "--model", models[28], "--json", "--engine", "fast")
    reference = run(a, "--model", models[28], "--json", "--engine", "reference")
    assert fast.exit_code == reference.exit_code == 0, fast.output + reference.output
    top = [json.loads(r.stdout)[0]["top_k"] for r in (fast, reference)]
    assert [t["label"] for t in top[0]] == [t["label"] for t in top[1]]
    for f, r in zip(*top):
        assert f["probability"] == pytest.approx(r["probability"], abs=2e-6)


def test_the_engine_choices_are_nn_engines():
    # nn/mnist/cli.py spells them out to keep `nn --help` free of NumPy; they must not drift
    from nn.engine import ENGINES
    from nn.mnist.cli import predict

    engine = typing.get_type_hints(predict, include_extras=True)["engine"]
    assert typing.get_args(typing.get_args(engine)[0]) == ENGINES


def test_json_is_a_list_in_argument_order_with_errors_in_place(tmp_path, models):
    good = draw(tmp_path / "two.png", "71", size=(150, 110))
    missing = tmp_path / "missing.png"
    r = run(good, missing, "--model", models[56], "--json", "--top-k", "5")
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert [o["file"] for o in out] == [str(good), str(missing)]
    first = out[0]
    assert set(first) == {"file", "label", "probability", "top_k"}
    assert re.fullmatch(r"\d\d", first["label"]) and len(first["top_k"]) == 5
    assert first["top_k"][0] == {"label": first["label"], "probability": first["probability"]}
    assert out[1] == {"file": str(missing), "error": "no such file or directory"}
    assert r.stderr == f"error: {missing}: no such file or directory\n"


def test_top_k_larger_than_the_classes_is_all_classes(tmp_path, models):
    r = run(draw(tmp_path / "a.png"), "--model", models[28], "--top-k", "50", "--json")
    assert r.exit_code == 0
    top = json.loads(r.stdout)[0]["top_k"]
    assert sorted(t["label"] for t in top) == [str(i) for i in range(10)]
    assert abs(sum(t["probability"] for t in top) - 1) < 1e-4


@pytest.mark.parametrize("width", [28, 56])
def test_show_input_writes_what_the_network_sees(tmp_path, models, width):
    img = draw(tmp_path / "in.png", "71")
    out = tmp_path / "seen" / "x.png"  # the folder is created
    r = run(img, "--model", models[width], "--show-input", out)
    assert r.exit_code == 0, r.output
    seen = np.asarray(Image.open(out))
    assert seen.shape == (28, width) and seen.dtype == np.uint8
    assert np.array_equal(seen, preprocess(img, width))


def test_show_input_for_several_images_numbers_them(tmp_path, models):
    a, b = draw(tmp_path / "a.png"), draw(tmp_path / "b.png", "1")
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    r = run(a, blank, b, "--model", models[28], "--show-input", tmp_path / "seen.png")
    assert r.exit_code == 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "seen-1.png")), preprocess(a))
    assert not (tmp_path / "seen-2.png").exists()  # the blank image has no input
    assert np.array_equal(np.asarray(Image.open(tmp_path / "seen-3.png")), preprocess(b))
    assert not (tmp_path / "seen.png").exists()


# --- bad input: exit code and message -------------------------------------------------


def bad_image(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.png"
    if kind == "missing":
        pass
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "truncated":
        draw(path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "blank":
        Image.new("RGB", (300, 200), "white").save(path)
    elif kind == "transparent":
        Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(path)
    elif kind == "too-large":
        path.write_bytes(png_header(10_000, 6_000))  # 60 megapixels, checked from the header
    elif kind == "directory":
        path.mkdir()
    return path


BAD_IMAGES = {
    "missing": "no such file or directory",
    "text": "not an image (unknown or unsupported format)",
    "empty-file": "not an image (unknown or unsupported format)",
    "truncated": "corrupt or truncated image",
    "blank": "blank image: no ink found",
    "transparent": "blank image: no ink found",
    "too-large": "image too large: 10000x6000 is 60.0 megapixels (limit 50)",
    "directory": "is a directory",
}


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_image_is_one_line_naming_file_and_problem(tmp_path, models, kind):
    bad = bad_image(tmp_path, kind)
    r = run(bad, "--model", models[28])
    assert r.exit_code == 1
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(f"error: {bad}: {BAD_IMAGES[kind]}")


def test_good_images_are_still_predicted_when_others_fail(tmp_path, models):
    bads = [bad_image(tmp_path, kind) for kind in BAD_IMAGES]
    goods = [draw(tmp_path / "g1.png"), draw(tmp_path / "g2.png", "1")]
    r = run(goods[0], *bads, goods[1], "--model", models[28])
    assert r.exit_code == 1
    assert [TEXT_LINE.match(line)["file"] for line in r.stdout.splitlines()] == [str(g) for g in goods]
    assert [line.split(": ")[1] for line in r.stderr.splitlines()] == [str(b) for b in bads]


def bad_model(tmp_path: Path, kind: str, models) -> Path:
    path = tmp_path / f"{kind}.npz"
    if kind == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    elif kind == "truncated":
        data = models[28].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "input-shape":
        rng = np.random.default_rng(1)
        m = Sequential.from_spec([{"type": "Linear", "in_features": 784, "out_features": 10}], rng)
        modelfile.save(path, m, normalization=NORM, input_shape=(784,), classes=[str(i) for i in range(10)])
    elif kind == "no-normalization":
        m = tiny_model(28, np.random.default_rng(1))
        modelfile.save(path, m, normalization={}, input_shape=(28, 28, 1), classes=[str(i) for i in range(10)])
    return path


@pytest.mark.parametrize(
    "kind,message",
    [
        ("missing", "no such file"),
        ("garbage", "not an .npz archive"),
        ("truncated", "truncated or corrupt .npz"),
        ("input-shape", "input shape (784,) is neither 28x28x1 (one digit) nor 28x56x1 (two digits)"),
        ("no-normalization", "normalization {} is not a finite mean and a positive std"),
    ],
)
def test_bad_model_exits_2_before_any_image(tmp_path, models, kind, message):
    model = bad_model(tmp_path, kind, models)
    r = run(draw(tmp_path / "a.png"), tmp_path / "missing-image.png", "--model", model)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1  # the model error only: no image was looked at
    assert r.stderr.startswith(f"error: {model}: ") and message in r.stderr


def test_default_model_is_models_cnn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/ here
    r = run(draw(tmp_path / "a.png"))
    assert r.exit_code == 2 and r.stderr.startswith("error: models/cnn.npz: no such file")


def test_unwritable_show_input_fails_but_still_predicts(tmp_path, models):
    (tmp_path / "file").write_text("")
    r = run(draw(tmp_path / "a.png"), "--model", models[28], "--show-input", tmp_path / "file" / "x.png")
    assert r.exit_code == 1
    assert TEXT_LINE.match(r.stdout.strip())
    assert r.stderr.startswith(f"error: {tmp_path / 'file' / 'x.png'}: cannot write")


def test_usage_errors():
    assert run("a.png", "--top-k", "0").exit_code == 2
    assert run().exit_code == 2
    r = CliRunner().invoke(app, [])
    assert "predict" in r.output  # `nn` alone lists the command


# --- round trips: MNIST arrays -> 3x inverted PNGs -> nn predict ------------------------


def render(images: np.ndarray, folder: Path) -> list[Path]:
    """MNIST-style arrays as black-on-white PNGs at 3x size, as a user's drawings might be."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(images):
        path = folder / f"{i:04d}.png"
        im = Image.fromarray(255 - a)
        im.resize((3 * im.width, 3 * im.height), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


def normalize(images: np.ndarray) -> np.ndarray:
    return modelfile.normalize(images, NORM)


def cli_accuracy(model: Path, paths: list[Path], labels: np.ndarray, classes: list[str]) -> float:
    r = run(*paths, "--model", model, "--json", "--top-k", "1")
    assert r.exit_code == 0, r.stderr
    predicted = [o["label"] for o in json.loads(r.stdout)]
    return float(np.mean([p == classes[y] for p, y in zip(predicted, labels)]))


def load_split(path: Path, n: int, skip_reason: str):
    if not path.exists():
        pytest.skip(skip_reason)
    with np.load(path) as d:
        return d["images"][:n], d["labels"][:n].astype(np.int64)


ROUND_TRIP_N = 1000  # test images per round trip: 1 point is 10 images


@pytest.fixture(scope="module")
def mnist_round_trip_pngs(tmp_path_factory):
    x, y = load_split(ROOT / "data/mnist/test.npz", ROUND_TRIP_N, "no data/mnist/test.npz (run `dvc repro`)")
    return x, y, render(x, tmp_path_factory.mktemp("mnist_png"))


@pytest.mark.slow
def test_round_trip_keeps_a_tiny_trained_mlp_accurate(tmp_path, mnist_round_trip_pngs):
    x_test, y_test, paths = mnist_round_trip_pngs
    x_train, y_train = load_split(ROOT / "data/mnist/train.npz", 12_000, "no data/mnist/train.npz")
    rng = np.random.default_rng(5)
    model = tiny_model(28, rng, hidden=64)
    fit(model, Adam(2e-3), normalize(x_train), y_train, epochs=2, batch_size=64, rng=rng)
    _, array_acc = evaluate(model, normalize(x_test), y_test)
    assert array_acc > 0.9  # the model has learnt something the round trip could lose
    path = save_model(tmp_path / "mlp.npz", model, 28)
    png_acc = cli_accuracy(path, paths, y_test, [str(i) for i in range(10)])
    print(f"tiny MLP: arrays {array_acc:.3f}, PNG round trip {png_acc:.3f}")
    assert png_acc >= array_acc - 0.01


def test_round_trip_with_the_trained_mlp(mnist_round_trip_pngs):
    model_path = ROOT / "models/mlp.npz"
    if not model_path.exists():
        pytest.skip("no models/mlp.npz (run `dvc repro`)")
    x, y, paths = mnist_round_trip_pngs
    model, info = modelfile.load(model_path)
    _, array_acc = evaluate(model, normalize_with(x, info), y)
    png_acc = cli_accuracy(model_path, paths, y, info.classes)
    print(f"models/mlp.npz: arrays {array_acc:.3f}, PNG round trip {png_acc:.3f}")
    assert png_acc >= array_acc - 0.01


def test_round_trip_with_the_trained_cnn(tmp_path):
    model_path = ROOT / "models/cnn.npz"
    if not model_path.exists():
        pytest.skip("no models/cnn.npz (run `dvc repro`)")
    x, y = load_split(ROOT / "data/mnist100/test.npz", ROUND_TRIP_N, "no data/mnist100/test.npz")
    model, info = modelfile.load(model_path)
    _, array_acc = evaluate(model, normalize_with(x, info), y)
    png_acc = cli_accuracy(model_path, render(x, tmp_path / "png"), y, info.classes)
    print(f"models/cnn.npz: arrays {array_acc:.3f}, PNG round trip {png_acc:.3f}")
    assert png_acc >= array_acc - 0.01


def normalize_with(images: np.ndarray, info) -> np.ndarray:
    return modelfile.normalize(images, info.normalization)


# --- predict: never overwrite, stdin, degenerate images, the size limit --------------------------

@pytest.fixture(scope="module")
def mlp_file(models):
    return models[28]


def test_show_input_never_overwrites_without_force(tmp_path, mlp_file):
    image = digit_png(tmp_path / "seven.png")
    original = image.read_bytes()
    # the user's own image as the --show-input target: refused, nothing predicted or written
    proc = nn_predict(image, "--model", mlp_file, "--show-input", image, cwd=tmp_path)
    line = check_one_line(proc, 1)  # 2 is for a model that cannot be used (nn predict --help)
    assert line == f"error: {image}: exists; --show-input does not overwrite files without --force"
    assert image.read_bytes() == original and proc.stdout == b""
    # several images: PATH-1, PATH-2; one of them taken is enough to refuse
    other = digit_png(tmp_path / "other.png", box=(10, 10, 30, 50))
    (tmp_path / "seen-2.png").write_bytes(b"keep me")
    proc = nn_predict(image, other, "--model", mlp_file, "--show-input", tmp_path / "seen.png",
                      cwd=tmp_path)
    assert check_one_line(proc, 1).startswith(f"error: {tmp_path / 'seen-2.png'}: exists")
    assert (tmp_path / "seen-2.png").read_bytes() == b"keep me"
    assert not (tmp_path / "seen-1.png").exists()
    # a new folder is fine; --force overwrites
    proc = nn_predict(image, "--model", mlp_file, "--show-input", tmp_path / "new" / "in.png",
                      cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "new" / "in.png").is_file()
    proc = nn_predict(image, other, "--model", mlp_file, "--show-input", tmp_path / "seen.png",
                      "--force", cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "seen-2.png").read_bytes()[:4] == b"\x89PNG"


def test_dash_reads_the_image_from_stdin(tmp_path, mlp_file):
    image = digit_png(tmp_path / "a.png")
    from_file = nn_predict(image, "--model", mlp_file, "--json", cwd=tmp_path)
    from_stdin = nn_predict("-", "--model", mlp_file, "--json", cwd=tmp_path,
                            stdin=image.read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    a, b = json.loads(from_file.stdout)[0], json.loads(from_stdin.stdout)[0]
    assert b["file"] == "-" and {**a, "file": "-"} == b
    bad = nn_predict("-", "--model", mlp_file, cwd=tmp_path, stdin=b"not an image")
    assert check_one_line(bad, 1) == "error: -: not an image (unknown or unsupported format)"


def test_degenerate_images_get_a_warning(tmp_path, mlp_file):
    wide = digit_png(tmp_path / "wide.png", size=(10000, 10), box=(100, 2, 9900, 8))
    speck = digit_png(tmp_path / "speck.png", size=(200, 200), box=(100, 100, 102, 102))
    proc = nn_predict(wide, speck, "--model", mlp_file, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert "warning: extreme aspect ratio (10000x10)" in lines[0]
    assert "warning: only 4 inked pixel(s): a speck, not a digit" in lines[1]
    out = json.loads(nn_predict(speck, "--model", mlp_file, "--json", cwd=tmp_path).stdout)
    assert out[0]["warning"] == "only 4 inked pixel(s): a speck, not a digit"


def test_an_animated_image_is_read_from_its_first_frame_with_a_warning(tmp_path, mlp_file):
    first = Image.open(digit_png(tmp_path / "seven.png"))
    gif = tmp_path / "moving.gif"
    first.save(gif, save_all=True, append_images=[first.rotate(30), first.rotate(60)])
    proc = nn_predict(gif, "--model", mlp_file, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["warning"] == "3 frames: only the first one is read"


def crafted_images(folder: Path, count: int) -> list[Path]:
    """`count` images of several formats with random bytes overwritten or cut off: files a
    decoder may fail on with any exception it likes."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 255, (40, 60), dtype=np.uint8)
    formats = ["PNG", "GIF", "TIFF", "JPEG", "BMP", "WEBP", "ICO", "TGA"]
    paths = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format=formats[i % len(formats)])
        data = bytearray(buf.getvalue())
        for j in rng.integers(0, len(data), rng.integers(1, 7)):
            data[j] = rng.integers(0, 256)
        if rng.random() < 0.3:
            data = data[:rng.integers(1, len(data))]
        paths.append(folder / f"crafted-{i}.{formats[i % len(formats)].lower()}")
        paths[-1].write_bytes(bytes(data))
    return paths


def test_every_unreadable_image_is_a_per_image_error(tmp_path):
    """Whatever a decoder raises on a crafted file, preprocess says ImageError (the class
    nn predict and nn serve answer per image); a missing file stays an OSError."""
    from nn.mnist.preprocess import ImageError, preprocess

    for path in crafted_images(tmp_path, 400):
        try:
            preprocess(path, 28)
        except ImageError:
            pass


def test_nn_predict_answers_unreadable_images_one_by_one(tmp_path, mlp_file):
    good = digit_png(tmp_path / "seven.png")
    crafted = crafted_images(tmp_path, 40)
    proc = nn_predict(*crafted, good, tmp_path / "missing.png", "--model", mlp_file,
                      cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    errors = err.splitlines()
    assert errors[-1] == f"error: {tmp_path / 'missing.png'}: no such file or directory"
    assert all(e.startswith(f"error: {tmp_path / 'crafted-'}") for e in errors[:-1]), errors
    assert f"{good}: " in proc.stdout.decode()


def test_the_50_megapixel_limit_is_the_one_quoted(tmp_path, mlp_file):
    images = [tmp_path / f"{w}x{h}.png" for w, h in ((8000, 7000), (10_000, 10_000), (20_000, 20_000))]
    for path, (w, h) in zip(images, ((8000, 7000), (10_000, 10_000), (20_000, 20_000))):
        path.write_bytes(png_header(w, h))
    proc = nn_predict(*images, "--model", mlp_file, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr.decode()
    assert proc.stderr.decode().splitlines() == [
        f"error: {images[0]}: image too large: 8000x7000 is 56.0 megapixels (limit 50)",
        f"error: {images[1]}: image too large: 100.0 megapixels (limit 50)",
        f"error: {images[2]}: image too large: 400.0 megapixels (limit 50)",
    ]
