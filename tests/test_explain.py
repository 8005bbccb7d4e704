"""The layers view (nn/mnist/explain/): `POST /api/explain`, `GET /api/kernel` and `nn explain`."""

from __future__ import annotations

from pathlib import Path


import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import servefakes
from nn.engine import build
from nn.layers import Layer
from nn.mnist.explain.atlas import map_atlas
from nn.mnist.explain.sheet import PAD, SHEET_WIDTH, _inked
from nn.mnist.explain.trace import LAYER_DOCS, explain, reference_copy
from nn.mnist.explain.web import view_json
from nn.mnist import modelfile
from nn.mnist.cli import app
from nn.model import Sequential
from servefakes import drawing, float64_copy, png_array, post, randomize_statistics, request, running_server


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory) -> dict[str, Path]:
    """The tiny MLP and, as the CNN, the pipeline's two-digit network in miniature."""
    folder = tmp_path_factory.mktemp("models")
    paths = servefakes.untrained_models(folder)
    tiled = randomize_statistics(build(servefakes.TILED_SPEC, np.random.default_rng(5)), np.random.default_rng(6))
    paths["cnn"] = servefakes.save(folder / "tiled.npz", tiled, 56)
    return paths


@pytest.fixture(scope="module")
def server(model_paths):
    with running_server(model_paths) as s:
        yield s


def explained(server, text: str, model: str = "cnn") -> dict:
    status, body, _ = request(server, "POST", f"/api/explain?model={model}", drawing(text),
                              {"Content-Type": "image/png"})
    assert status == 200, body
    return body


def direct_outputs(path, x_uint8: np.ndarray) -> list[np.ndarray]:
    """The saved model's layers one by one, in inference mode: what the view must show."""
    net, info = modelfile.load(path, engine="reference")
    h = modelfile.normalize(x_uint8[None], info.normalization)
    outs = []
    for layer in net.layers:
        h = layer.forward(h, training=False)
        outs.append(h)
    return outs


@pytest.mark.parametrize("model,text", [("cnn", "71"), ("mlp", "4")])
def test_the_api_shows_each_layers_output_of_a_direct_forward(server, model_paths, model, text):
    body = explained(server, text, model)
    x = png_array(body["diagnostics"]["input"])  # the exact array the network read
    outs = direct_outputs(model_paths[model], x)
    assert [v["index"] for v in body["layers"]] == list(range(len(outs)))
    for view, out in zip(body["layers"], outs):
        assert view["shape"] == list(out.shape[1:]) and view["tiles"] == len(out)
        if view["kind"] == "maps":
            assert view["range"] == pytest.approx([out.min(), out.max()], rel=1e-5, abs=1e-6)
            for tile, url in zip(out, view["maps"], strict=True):
                want = map_atlas(tile, float(out.min()), float(out.max())).astype(int)
                assert np.abs(png_array(url).astype(int) - want).max() <= 1
        elif view["kind"] == "bars":
            np.testing.assert_allclose(view["values"], out, atol=1e-4)
            if model == "mlp" and view["index"] == len(outs) - 1:
                assert view["labels"] == servefakes.CLASSES[28]  # the ten scores, labelled
        elif view["kind"] == "digits":
            np.testing.assert_allclose(view["scores"], out.reshape(2, -1), atol=1e-4)
            e = np.exp(out.reshape(2, -1) - out.reshape(2, -1).max(axis=1, keepdims=True))
            np.testing.assert_allclose(view["probabilities"], e / e.sum(axis=1, keepdims=True), atol=1e-5)
        elif view["kind"] == "pairs":
            np.testing.assert_allclose(view["scores"], out[0], atol=1e-4)
        else:
            assert view["kind"] == "flat" and view["type"] == "Flatten"
        assert view["doc"] == LAYER_DOCS[view["type"]][1]
    # the prediction is the same as /api/predict's (the fast engine) and the last layer's softmax
    predicted = post(server, drawing(text), model)[1]
    assert body["label"] == predicted["label"] == body["top"]
    assert body["probability"] == pytest.approx(predicted["probability"], abs=1e-5)


def test_the_pair_is_the_product_of_its_two_digits(server):
    body = explained(server, "47")
    kinds = {v["kind"]: v for v in body["layers"]}
    assert [v["kind"] for v in body["layers"]][0] == "maps" and body["layers"][0]["type"] == "Tiles"
    assert len(body["layers"][0]["maps"]) == 2  # the two digits, side by side
    digits, pairs = kinds["digits"]["probabilities"], kinds["pairs"]["top"]
    best = pairs[0]
    assert best["label"] == body["label"]
    a, b = (d["label"] for d in best["digits"])
    assert best["label"] == a + b
    assert best["digits"][0]["probability"] == pytest.approx(digits[0][int(a)], abs=1e-6)
    assert best["probability"] == pytest.approx(digits[0][int(a)] * digits[1][int(b)], rel=1e-4)


def score(net: Sequential, x: np.ndarray, c: int) -> float:
    return float(net.forward(x, training=False)[0, c])


@pytest.mark.parametrize("spec,width", [(servefakes.TILED_SPEC, 56), (servefakes.MLP_SPEC, 28)])
def test_saliency_is_the_gradient_by_finite_differences(spec, width):
    rng = np.random.default_rng(7)
    net = float64_copy(randomize_statistics(build(spec, rng), rng))
    x = rng.normal(0, 1, (1, 28, width, 1))
    trace = explain(net, x)
    c = trace.top
    assert c == int(np.argmax(net.forward(x, training=False)))
    g = trace.saliency
    pixels = [np.unravel_index(np.abs(g).argmax(), g.shape)] + \
             [tuple(rng.integers(0, s) for s in g.shape) for _ in range(6)]
    eps = 1e-6
    for i, j in pixels:
        up, down = x.copy(), x.copy()
        up[0, i, j, 0] += eps
        down[0, i, j, 0] -= eps
        numeric = (score(net, up, c) - score(net, down, c)) / (2 * eps)
        assert g[i, j] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (i, j)
    assert np.abs(g).max() > 0
    # the float32 pass the server runs agrees with it
    net32 = reference_copy(build(spec, np.random.default_rng(0)))
    net32.load_state_dict(net.state_dict())
    g32 = explain(net32, x.astype(np.float32)).saliency
    np.testing.assert_allclose(g32, g, atol=1e-4 * np.abs(g).max())


def test_the_api_saliency_is_a_heat_map_over_the_input(server):
    body = explained(server, "71")
    heat = png_array(body["saliency"])
    assert heat.shape == (28, 56, 4) and heat[..., 3].max() == 255  # the strongest pixel is opaque
    assert body["saliency_max"] > 0


class Square(Layer):
    """A layer the view does not know."""

    def forward(self, x, training):
        return x * x


def test_a_model_with_unknown_layers_gets_a_plain_list():
    rng = np.random.default_rng(0)
    net = Sequential([Square(), *build(servefakes.MLP_SPEC, rng, engine="reference").layers])
    trace = explain(net, rng.normal(0, 1, (1, 28, 28, 1)).astype(np.float32))
    body = view_json(trace, [str(i) for i in range(10)])
    assert body["saliency"] is None
    assert [v["kind"] for v in body["layers"]] == ["list"] * 5
    assert body["layers"][0]["type"] == "Square" and body["layers"][-1]["shape"] == [10]


def test_kernel_is_the_conv_weights(server, model_paths):
    net, _ = modelfile.load(model_paths["cnn"], engine="reference")
    status, body, _ = request(server, "GET", "/api/kernel?model=cnn&layer=5&channel=2")
    assert status == 200
    w = net.layers[5].params["W"][:, :, :, 2].transpose(2, 0, 1)  # (C_in, 3, 3)
    np.testing.assert_allclose(body["weights"], w, atol=1e-4)
    assert body["bias"] == pytest.approx(float(net.layers[5].params["b"][2]), abs=1e-4)
    assert png_array(body["picture"]).shape == (3, 4 * 4 - 1, 3)  # four 3x3 kernels in a row
    assert body["doc"] == "03-conv2d.md"


@pytest.mark.parametrize("query,message", [
    ("model=cnn&layer=2&channel=0", "layer 2 is not a Conv2d"),
    ("model=cnn&layer=1&channel=4", "channel must be from 0 to 3, not 4"),
    ("model=cnn&layer=x&channel=0", "layer must be an integer >= 0, not 'x'"),
    ("model=rnn&layer=1&channel=0", "unknown model 'rnn'"),
])
def test_bad_kernel_requests_are_one_line(server, query, message):
    status, body, _ = request(server, "GET", f"/api/kernel?{query}")
    assert status == 400 and list(body) == ["error"] and body["error"].startswith(message)


def test_the_layer_pages_are_served(server):
    status, body, headers = request(server, "GET", "/docs/03-conv2d.md")
    assert status == 200 and headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert body.startswith(b"# ") and b"im2col" in body
    assert request(server, "GET", "/docs/11-pipeline.md")[0] == 404  # not a layer page


def test_nn_explain_writes_the_sheet(model_paths, tmp_path):
    image = tmp_path / "71.png"
    image.write_bytes(drawing("71"))
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["explain", str(image), "--model", str(model_paths["cnn"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    sheet = Image.open(out)
    assert sheet.width == SHEET_WIDTH and sheet.height > 600
    assert result.output.endswith(f"sheet: {out} ({sheet.width}x{sheet.height})\n")
    # the input, black on white at 4x, where the sheet puts it
    from nn.mnist.preprocess import preprocess
    want = np.asarray(_inked(preprocess(image, 56), 4))
    top = PAD + 24 + 18
    got = np.asarray(sheet.convert("RGB"))[top:top + want.shape[0], PAD:PAD + want.shape[1]]
    np.testing.assert_array_equal(got, want)


def test_nn_explain_bad_input(model_paths, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    runner = CliRunner()
    result = runner.invoke(app, ["explain", str(tmp_path / "notes.txt"), "--model", str(model_paths["cnn"]),
                                 "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 1 and result.output.startswith(f"error: {tmp_path / 'notes.txt'}: not an image")
    result = runner.invoke(app, ["explain", str(tmp_path / "notes.txt"), "--model", str(tmp_path / "none.npz")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and len(result.output.splitlines()) == 1
    assert not (tmp_path / "s.png").exists()


def test_nn_explain_reads_stdin_as_nn_predict_does(model_paths, tmp_path):
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["explain", "-", "--model", str(model_paths["cnn"]), "--out", str(out)],
                                input=drawing("71"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("-: ") and Image.open(out).format == "PNG"
    result = CliRunner().invoke(app, ["explain", "-", "--model", str(model_paths["cnn"]), "--out",
                                      str(tmp_path / "other.png")], input=b"not an image")
    assert result.exit_code == 1 and result.output.startswith("error: -: not an image")


def test_nn_explain_out_is_not_overwritten_without_force_and_takes_its_extension(model_paths, tmp_path):
    image = tmp_path / "71.png"
    image.write_bytes(drawing("71"))
    runner = CliRunner()

    def nn_explain(out, *more):
        return runner.invoke(app, ["explain", str(image), "--model", str(model_paths["cnn"]), "--out", str(out), *more])

    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my own picture")
    result = nn_explain(mine)
    assert result.exit_code == 1 and result.output == f"error: {mine}: exists; --out does not overwrite files without --force\n"
    assert mine.read_bytes() == b"my own picture"
    assert nn_explain(mine, "--force").exit_code == 0 and Image.open(mine).format == "PNG"
    for name, form in (("sheet.jpg", "JPEG"), ("sheet.JPEG", "JPEG"), ("sheet.webp", "WEBP")):
        assert nn_explain(tmp_path / name).exit_code == 0 and Image.open(tmp_path / name).format == form
    for name, ext in (("sheet.txt", "'.txt'"), ("sheet", "'a name without an extension'")):
        result = nn_explain(tmp_path / name)
        assert result.exit_code == 1 and result.output.startswith(
            f"error: {tmp_path / name}: cannot write a picture as {ext} (give one of ") and ".png" in result.output
        assert not (tmp_path / name).exists()


def test_messages_keep_the_case_of_paths(model_paths, tmp_path):
    image = tmp_path / "71.png"
    image.write_bytes(drawing("71"))
    folder = tmp_path / "MixedCase" / "Sheet.png"
    folder.mkdir(parents=True)                        # a folder where the sheet would go
    result = CliRunner().invoke(app, ["explain", str(image), "--model", str(model_paths["cnn"]),
                                      "--out", str(folder), "--force"])
    assert result.exit_code == 1 and result.output == (
        f"error: {folder}: cannot write ({folder}: is a folder, not a file that can be replaced)\n")
    missing = tmp_path / "MixedCase" / "Missing.PNG"
    result = CliRunner().invoke(app, ["explain", str(missing), "--model", str(model_paths["cnn"]),
                                      "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 1 and result.output == f"error: {missing}: no such file or directory\n"
