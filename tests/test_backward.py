"""The backward view (nn/mnist/explain/trace.py::backward, `POST /api/backward`, `nn explain --backward`):
each layer's gradient of one label's loss, held to a direct backward and to finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import servefakes
from nn.engine import build
from nn.losses import log_softmax, softmax_cross_entropy
from nn.mnist.explain.atlas import MATRIX_ROWS, diverging_index, grad_atlas, kernel_atlas
from nn.mnist.explain.sheet import PAD, SHEET_WIDTH, _zoomed
from nn.mnist.explain.trace import LAYER_DOCS, backward, reference_copy
from nn.mnist import modelfile
from nn.model import Sequential
from servefakes import drawing, running_server
from servefakes import float64_copy, png_array, randomize_statistics, request


def direct_backward(net: Sequential, x: np.ndarray, label: int):
    """The model's own training-mode forward and its layers' own backward, one by one: for a model
    whose training forward is its inference forward (no BatchNorm, no Dropout), the gradients."""
    logits = net.forward(x, training=True)
    loss, dout = softmax_cross_entropy(logits, np.array([label]))
    douts, grads = [None] * len(net.layers), [None] * len(net.layers)
    for i in range(len(net.layers) - 1, -1, -1):
        douts[i] = dout
        dout = net.layers[i].backward(dout)
        grads[i] = {k: v.copy() for k, v in net.layers[i].grads.items()}
    return loss, douts, grads, dout


PLAIN = {"cnn": (servefakes.CNN_SPEC, 56), "mlp": (servefakes.MLP_SPEC, 28)}


@pytest.mark.parametrize("name", PLAIN)
def test_each_layers_gradient_is_a_direct_backward(name):
    spec, width = PLAIN[name]
    rng = np.random.default_rng(1)
    net = build(spec, rng, engine="reference")
    x = rng.normal(0, 1, (1, 28, width, 1)).astype(np.float32)
    label = 42 if width == 56 else 3
    loss, douts, grads, dx = direct_backward(reference_copy(net), x, label)
    g = backward(reference_copy(net), x, label)
    assert g.label == label and g.loss == pytest.approx(loss, rel=1e-6)
    assert len(g.douts) == len(douts) == len(net.layers)
    for i, (got, want) in enumerate(zip(g.douts, douts)):
        np.testing.assert_array_equal(got, want, err_msg=f"layer {i}")
        assert g.grads[i].keys() == grads[i].keys() == net.layers[i].params.keys()
        for k in grads[i]:
            np.testing.assert_array_equal(g.grads[i][k], grads[i][k], err_msg=f"layer {i} {k}")
    np.testing.assert_array_equal(g.dinput, dx[0, :, :, 0])
    # the top class by default
    top = int(np.argmax(net.forward(x, training=False)))
    assert backward(reference_copy(net), x).label == top


def loss_of(net: Sequential, x: np.ndarray, label: int, start: int = 0) -> float:
    """-log p(label) in inference mode, from layer `start` on (x: that layer's input)."""
    for layer in net.layers[start:]:
        x = layer.forward(x, training=False)
    return float(-log_softmax(x)[0, label])


@pytest.mark.parametrize("spec,width", [(servefakes.TILED_SPEC, 56), (servefakes.MLP_SPEC, 28)])
def test_gradients_are_finite_differences(spec, width):
    """With BatchNorm (running statistics, γ, β as after training) and Dropout, in float64."""
    rng = np.random.default_rng(8)
    net = float64_copy(randomize_statistics(build(spec, rng), rng))
    x = rng.normal(0, 1, (1, 28, width, 1))
    label = 37 if width == 56 else 6
    g = backward(net, x, label)
    eps = 1e-6
    inputs = [x] + g.trace.outputs[:-1]
    for i, d in enumerate(g.douts):  # dL/d(layer i's output): nudge that output, run the rest
        out = g.trace.outputs[i]
        smooth = np.abs(out) > 1e-3  # off ReLU's kink and max-pooling's ties among zeros
        picks = np.flatnonzero(smooth)
        strongest = picks[np.abs(d.ravel()[picks]).argmax()]
        for flat in [strongest, *rng.choice(picks, 2)]:
            idx = np.unravel_index(flat, d.shape)
            up, down = out.copy(), out.copy()
            up[idx] += eps
            down[idx] -= eps
            numeric = (loss_of(net, up, label, i + 1) - loss_of(net, down, label, i + 1)) / (2 * eps)
            assert d[idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (i, idx)
        for k, grad in g.grads[i].items():  # dL/d(weights): nudge one weight, run it all
            p = net.layers[i].params[k]
            for idx in [np.unravel_index(np.abs(grad).argmax(), grad.shape), tuple(rng.integers(0, s) for s in grad.shape)]:
                keep = p[idx]
                p[idx] = keep + eps
                up = loss_of(net, inputs[i], label, i)
                p[idx] = keep - eps
                down = loss_of(net, inputs[i], label, i)
                p[idx] = keep
                assert grad[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8), (i, k, idx)
    assert all(np.abs(d).max() > 0 for d in g.douts)
    assert g.loss == pytest.approx(loss_of(net, x, label), rel=1e-12)


@pytest.fixture(scope="module")
def plain_paths(tmp_path_factory):
    """The tests' untrained MLP and CNN: no BatchNorm, no Dropout, so a direct backward is exact."""
    return servefakes.untrained_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(plain_paths):
    with running_server(plain_paths) as s:
        yield s


def backward_api(server, text: str, model: str = "cnn", query: str = "") -> tuple[int, dict]:
    status, body, _ = request(server, "POST", f"/api/backward?model={model}{query}", drawing(text),
                              {"Content-Type": "image/png"})
    return status, body


def indices(url: str) -> np.ndarray:
    """A paletted PNG's indices (PALETTE, nn/mnist/explain/atlas.py)."""
    return png_array(url).astype(int)


@pytest.mark.parametrize("model,text,label", [("cnn", "71", None), ("cnn", "47", "12"), ("mlp", "4", "9")])
def test_the_api_shows_a_direct_backward_layer_by_layer(server, plain_paths, model, text, label):
    status, body = backward_api(server, text, model, f"&label={label}" if label else "")
    assert status == 200, body
    net, info = modelfile.load(plain_paths[model], engine="reference")
    classes = info.classes
    x = modelfile.normalize(png_array(body["diagnostics"]["input"])[None], info.normalization)
    top = int(np.argmax(net.forward(x, training=False)))
    c = classes.index(label) if label else top
    loss, douts, grads, dx = direct_backward(net, x, c)
    b = body["backward"]
    assert b["label"] == classes[c] and b["loss"] == pytest.approx(loss, rel=1e-5)
    assert body["label"] == classes[top]  # the prediction beside it, as /api/explain answers it
    assert [v["index"] for v in b["layers"]] == list(range(len(douts)))
    for v, d, gr in zip(b["layers"], douts, grads):
        m = float(np.abs(d).max())
        assert v["max"] == pytest.approx(m, rel=1e-5) and v["shape"] == list(d.shape[1:])
        assert v["doc"] == LAYER_DOCS[v["type"]][1] and v["formula"]
        if v["kind"] == "maps":
            for tile, url in zip(d, v["maps"], strict=True):
                assert np.abs(indices(url) - grad_atlas(tile, m).astype(int)).max() <= 1
        elif v["kind"] == "bars":
            np.testing.assert_allclose(v["values"], d, rtol=1e-3, atol=1e-3 * m)
        else:
            assert v["kind"] == "flat"
        assert [p["name"] for p in v["params"]] == list(gr)
        for p in v["params"]:
            want = gr[p["name"]]
            assert p["max"] == pytest.approx(float(np.abs(want).max()), rel=1e-5)
            if p["kind"] == "kernels":  # each kernel's gradient beside the kernel
                w = net.layers[v["index"]].params["W"]
                assert np.abs(indices(p["grad"]) - kernel_atlas(want, p["max"]).astype(int)).max() <= 1
                assert np.abs(indices(p["weights"]) - kernel_atlas(w, float(np.abs(w).max()))).max() <= 1
            elif p["kind"] == "matrix":
                assert np.abs(indices(p["grad"]) - diverging_index(want[:, p["rows"]].T, p["max"])).max() <= 1
                strongest = np.argsort(-np.abs(want).sum(axis=0), kind="stable")[:MATRIX_ROWS]
                assert p["rows"] == sorted(strongest.tolist())
            else:
                np.testing.assert_allclose(p["values"], want, rtol=1e-3, atol=1e-3 * p["max"])
    m = float(np.abs(dx).max())
    assert b["input_max"] == pytest.approx(m, rel=1e-5)
    assert np.abs(indices(b["input"]) - diverging_index(dx[0, :, :, 0], m)).max() <= 1


def test_nn_explain_backward_draws_the_gradients(tmp_path):
    from typer.testing import CliRunner

    from nn.mnist.cli import app
    from nn.mnist.preprocess import preprocess

    rng = np.random.default_rng(5)
    path = servefakes.save(tmp_path / "tiled.npz", randomize_statistics(build(servefakes.TILED_SPEC, rng), rng), 56)
    image = tmp_path / "71.png"
    image.write_bytes(drawing("71"))
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["explain", str(image), "--model", str(path), "--backward", "--label", "42",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open(out).convert("RGB"))
    # the last band: the input and, beside it, dL/d(input) of the loss of 42, as a direct backward draws it
    net, info = modelfile.load(path, engine="reference")
    x = preprocess(image, 56)
    g = backward(net, modelfile.normalize(x[None], info.normalization), 42)
    assert g.label == 42
    want = np.asarray(_zoomed(diverging_index(g.dinput, float(np.abs(g.dinput).max())), 4))
    top, left = sheet.shape[0] - 30 - PAD - want.shape[0], PAD + 56 * 4 + PAD
    np.testing.assert_array_equal(sheet[top:top + want.shape[0], left:left + want.shape[1]], want)
    assert sheet.shape[1] == SHEET_WIDTH and sheet.shape[0] > 1000


@pytest.mark.parametrize("args,message", [
    (["--backward", "--label", "711"], "error: label must be one of the model's classes (00 to 99), not '711'"),
    (["--backward", "--label", "7"], "error: label must be one of the model's classes (00 to 99), not '7'"),
    (["--label", "71"], "error: --label needs --backward"),
])
def test_nn_explain_backward_bad_label(plain_paths, tmp_path, args, message):
    from typer.testing import CliRunner

    from nn.mnist.cli import app

    image = tmp_path / "71.png"
    image.write_bytes(drawing("71"))
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["explain", str(image), "--model", str(plain_paths["cnn"]), *args,
                                      "--out", str(out)])
    assert result.exit_code == 1 and result.output == message + "\n"
    assert not out.exists()
