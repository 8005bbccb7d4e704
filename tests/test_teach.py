""""Teach it" (`POST /api/teach`, `POST /api/reset`) and the bad input of the new endpoints:
gradient descent on a drawing, on a private copy of the model, held to a hand-made step."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest

import servefakes
from nn.losses import softmax_cross_entropy
from nn.mnist import modelfile
from nn.mnist.explain.atlas import kernel_atlas
from nn.mnist import serve as web
from servefakes import drawing, running_server
from servefakes import BAD_POSTS, png_array, raw, request


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    return servefakes.untrained_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(model_paths):
    with running_server(model_paths) as s:
        yield s


def teach(server, text: str, query: str, model: str = "cnn"):
    status, body, _ = request(server, "POST", f"/api/teach?model={model}&{query}", drawing(text),
                              {"Content-Type": "image/png"})
    return status, body


def hand_made_steps(path, x_uint8: np.ndarray, label: int, lr: float, steps: int):
    """The saved model, trained by hand: forward, the loss's gradient, every layer's backward,
    p -= lr * grad. (The test CNN has no BatchNorm or Dropout: training forward = inference.)"""
    net, info = modelfile.load(path, engine="reference")
    x = modelfile.normalize(x_uint8[None], info.normalization)
    losses = []
    for _ in range(steps):
        loss, d = softmax_cross_entropy(net.forward(x, training=True), np.array([label]))
        losses.append(loss)
        for layer in reversed(net.layers):
            d = layer.backward(d)
        for layer in net.layers:
            for k in layer.params:
                layer.params[k] -= lr * layer.grads[k]
    losses.append(softmax_cross_entropy(net.forward(x, training=False), np.array([label]))[0])
    return net, losses


@pytest.mark.parametrize("model,text,label,steps,lr", [("cnn", "71", "42", 1, 0.05), ("cnn", "47", "47", 3, 0.01),
                                                       ("mlp", "4", "9", 2, 0.1)])
def test_a_teach_step_is_a_hand_made_gradient_step(server, model_paths, model, text, label, steps, lr):
    status, body = teach(server, text, f"label={label}&steps={steps}&lr={lr}", model)
    assert status == 200, body
    x = png_array(body["diagnostics"]["input"])
    classes = servefakes.CLASSES[56 if model == "cnn" else 28]
    want, losses = hand_made_steps(model_paths[model], x, classes.index(label), lr, steps)
    taught = server.sessions.get(body["session"]).net
    for (k, got), (k2, expected) in zip(taught.params.items(), want.params.items(), strict=True):
        assert k == k2
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=k)
    assert body["losses"] == pytest.approx(losses, rel=1e-4, abs=1e-6)
    assert body["before"]["loss"] == body["losses"][0] and body["after"]["loss"] == body["losses"][-1]
    assert body["after"]["loss"] < body["before"]["loss"]  # a step downhill, on this image
    assert body["label"] == label and body["steps"] == body["taught"] == steps
    conv = [i for i, layer in enumerate(want.layers) if type(layer).__name__ == "Conv2d"]
    assert [k["layer"] for k in body["kernels"]] == conv
    for k in body["kernels"]:  # the kernels before (the served ones) and after (the taught ones)
        served, _ = modelfile.load(model_paths[model], engine="reference")
        w0, w1 = served.layers[k["layer"]].params["W"], want.layers[k["layer"]].params["W"]
        m = max(np.abs(w0).max(), np.abs(w1).max())
        assert k["max"] == pytest.approx(float(m), rel=1e-5)
        assert np.abs(png_array(k["before"]).astype(int) - kernel_atlas(w0, m)).max() <= 1
        assert np.abs(png_array(k["after"]).astype(int) - kernel_atlas(w1, m)).max() <= 1
        moved = np.sqrt(((w1 - w0) ** 2).sum(axis=(0, 1, 2)))
        assert k["changed"][0] == int(moved.argmax())


def test_a_session_goes_on_from_where_it_was_and_resets(server):
    _, first = teach(server, "71", "label=71&steps=1&lr=0.01")
    sid = first["session"]
    _, second = teach(server, "71", f"label=71&steps=2&lr=0.01&session={sid}")
    assert second["session"] == sid and second["taught"] == 3
    assert second["before"]["loss"] == pytest.approx(first["after"]["loss"], rel=1e-5)  # the taught copy, not the served one
    _, fresh = teach(server, "71", "label=71&steps=1&lr=0.01")
    assert fresh["session"] != sid and fresh["before"]["loss"] == pytest.approx(first["before"]["loss"], rel=1e-6)
    assert request(server, "POST", f"/api/reset?session={sid}")[:2] == (200, {"session": sid, "reset": True})
    status, body = teach(server, "71", f"label=71&session={sid}")
    assert status == 410 and body["error"].startswith(f"session '{sid}' is unknown or expired")


def test_teaching_never_changes_the_served_model(server, model_paths):
    files = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in model_paths.items()}
    listing = sorted(p.name for p in model_paths["cnn"].parent.iterdir())
    image = drawing("71")
    answers = [request(server, "POST", f"/api/{api}?model=cnn", image, {"Content-Type": "image/png"})[1]
               for api in ("predict", "explain", "backward")]
    state = {k: v.copy() for k, v in server.models["cnn"].reference.state_dict().items()}
    for _ in range(3):
        assert teach(server, "71", "label=71&steps=5&lr=1")[0] == 200
    assert {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in model_paths.items()} == files
    assert sorted(p.name for p in model_paths["cnn"].parent.iterdir()) == listing  # no file written beside it
    for k, v in server.models["cnn"].reference.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    assert [request(server, "POST", f"/api/{api}?model=cnn", image, {"Content-Type": "image/png"})[1]
            for api in ("predict", "explain", "backward")] == answers


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_sessions_are_bounded_and_expire(server):
    clock = Clock()
    sessions = web.Sessions(limit=2, ttl=60, clock=clock)
    m = server.models["mlp"]
    a, _ = sessions.new("mlp", m)
    clock.now = 1
    b, _ = sessions.new("mlp", m)
    clock.now = 2
    sessions.get(a)  # a is used again: b is now the least recently used
    c, _ = sessions.new("mlp", m)
    assert len(sessions) == 2 and sessions.get(a) and sessions.get(c)
    with pytest.raises(web.RequestError) as e:
        sessions.get(b)
    assert e.value.status == 410
    clock.now = 2 + 61
    with pytest.raises(web.RequestError):
        sessions.get(a)
    assert len(sessions) == 0
    with pytest.raises(web.RequestError) as e:
        web.Sessions().get(None)
    assert e.value.status == 410


# --- bad input: the limits and one-line JSON errors of /api/explain -------------------------

@pytest.mark.parametrize("endpoint", ["backward", "teach"])
@pytest.mark.parametrize("name", [n for n in BAD_POSTS if not n.startswith("top_k")])
def test_bad_posts_to_the_new_endpoints(server, endpoint, name):
    body, content_type, query, status, message = BAD_POSTS[name]
    got, answer, headers = request(server, "POST", f"/api/{endpoint}?label=71&{query}", body,
                                   {"Content-Type": content_type})
    assert (got, headers["Content-Type"]) == (status, "application/json")
    assert list(answer) == ["error"] and answer["error"].startswith(message) and "\n" not in answer["error"]
    assert request(server, "GET", "/api/health")[0] == 200


BAD_OPTIONS = {  # name: (endpoint, query or JSON fields, status, start of the error)
    "backward label out of range": ("backward", "label=100", 400, "label must be one of the model's classes (00 to 99), not '100'"),
    "backward one digit for the CNN": ("backward", "label=7", 400, "label must be one of the model's classes (00 to 99)"),
    "backward label for the MLP": ("backward", "model=mlp&label=10", 400, "label must be one of the model's classes (0 to 9), not '10'"),
    "backward label a number in JSON": ("backward", {"label": 71}, 400, "label must be one of the model's classes"),
    "teach without a label": ("teach", "steps=1", 400, "label is required"),
    "teach label out of range": ("teach", "label=-1", 400, "label must be one of the model's classes"),
    "steps zero": ("teach", "label=71&steps=0", 400, "steps must be an integer from 1 to 20, not 0"),
    "steps too many": ("teach", "label=71&steps=21", 400, "steps must be an integer from 1 to 20, not 21"),
    "steps not a number": ("teach", "label=71&steps=two", 400, "steps must be an integer from 1 to 20, not 'two'"),
    "steps a fraction": ("teach", "label=71&steps=1.5", 400, "steps must be an integer"),
    "steps unicode digits": ("teach", "label=71&steps=%C2%B2", 400, "steps must be an integer"),
    "steps true in JSON": ("teach", {"label": "71", "steps": True}, 400, "steps must be an integer"),
    "lr zero": ("teach", "label=71&lr=0", 400, "lr must be a number over 0 and at most 1, not 0.0"),
    "lr too large": ("teach", "label=71&lr=2", 400, "lr must be a number over 0 and at most 1, not 2.0"),
    "lr negative": ("teach", "label=71&lr=-0.1", 400, "lr must be a number over 0 and at most 1, not '-0.1'"),
    "lr nan": ("teach", "label=71&lr=nan", 400, "lr must be a number over 0 and at most 1, not 'nan'"),
    "lr inf": ("teach", "label=71&lr=inf", 400, "lr must be a number"),
    "lr overflow": ("teach", "label=71&lr=1e999", 400, "lr must be a number"),
    "lr nan in JSON": ("teach", {"label": "71", "lr": "NaN"}, 400, "lr must be a number"),
    "stale session": ("teach", "label=71&session=abc", 410, "session 'abc' is unknown or expired"),
    "session not a string": ("teach", {"label": "71", "session": 5}, 410, "session '5' is unknown or expired"),
}


@pytest.mark.parametrize("name", BAD_OPTIONS)
def test_bad_options_are_one_line_and_the_server_keeps_serving(server, model_paths, name):
    endpoint, options, status, message = BAD_OPTIONS[name]
    before = len(server.sessions)
    if isinstance(options, dict):
        url = "data:image/png;base64," + base64.b64encode(drawing("71")).decode()
        got, answer, _ = request(server, "POST", f"/api/{endpoint}", json.dumps({"image": url, **options}).encode(),
                                 {"Content-Type": "application/json"})
    else:
        got, answer, _ = request(server, "POST", f"/api/{endpoint}?{options}", drawing("71"),
                                 {"Content-Type": "image/png"})
    assert got == status and list(answer) == ["error"], answer
    assert answer["error"].startswith(message) and "\n" not in answer["error"], answer["error"]
    assert len(server.sessions) == before  # no session made by a refused request
    assert teach(server, "71", "label=71")[0] == 200  # and it keeps serving


def test_a_session_of_another_model_and_bad_resets(server):
    _, body = teach(server, "7", "label=7", model="mlp")
    status, answer = teach(server, "71", f"label=71&session={body['session']}")
    assert status == 400 and answer["error"] == f"session {body['session']!r} is a copy of the mlp model, not 'cnn'"
    assert request(server, "POST", "/api/reset?session=nope")[:2] == (
        410, {"error": "session 'nope' is unknown or expired (sessions last 600 s after their last use): "
                       "teach again to start a new one"})
    assert request(server, "POST", "/api/reset")[0] == 410
    status, answer, headers = request(server, "GET", f"/api/reset?session={body['session']}")
    assert status == 405 and headers["Allow"] == "POST"
    assert request(server, "GET", "/api/teach")[0] == 405
    assert server.sessions.get(body["session"])  # a refused reset leaves it


@pytest.mark.parametrize("path", ["/api/teach?label=71", "/api/backward", "/api/reset?session=x"])
def test_cross_origin_and_oversized_bodies(server, path):
    status, answer, _ = request(server, "POST", path, drawing("71"),
                                {"Content-Type": "image/png", "Origin": "http://evil.example"})
    assert status == 403 and answer["error"] == "cross-origin request from http://evil.example refused"
    answer = raw(server, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                 b"Content-Length: %d\r\n\r\n" % (web.MAX_BODY + 1) + b"\x89PNG")
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit" in answer
