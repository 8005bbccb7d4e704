"""`nn serve`: a local web page to draw a digit or a two-digit number and watch the networks read it.

Standard library only (http.server) around the same path as `nn predict`: nn.mnist.classify
loads each model once at start, nn.mnist.preprocess reads each image. The page is one static
file, serve.html, beside this module; nothing is fetched from elsewhere, so it works offline.

    GET  /, /index.html   the page
    GET  /api/health      {"status": "ok", "models": {"mlp": {...}, "cnn": {...}}}
    POST /api/predict     an image -> nn predict's JSON object plus "model" and "diagnostics"
    POST /api/explain     the same, plus every layer's output and the saliency (nn.mnist.explain)
    POST /api/backward    the same, plus every layer's gradient of the loss of ?label= (top class by default)
    GET  /api/kernel      ?model=cnn&layer=1&channel=0: one Conv2d kernel, numbers and picture
    POST /api/teach       an image and ?label=71&steps=1&lr=0.1[&session=...]: gradient descent on it,
                          on a private copy of the model (a session); before and after
    POST /api/reset       ?session=...: forget a session's copy
    GET  /api/train       ?since=N: the training view (nn.mnist.watch): its state and points from N on
    POST /api/train/start, /api/train/stop: one seeded run at a time, in its own process
    GET  /docs/0N-....md  the guide's layer pages (text), which the layers view links to

The image is the raw body (PNG, JPEG, ...: anything Pillow reads; ?model=mlp|cnn&top_k=5), or
a JSON body {"image": "data:image/png;base64,...", "model": "cnn", "top_k": 5}.
Every error is JSON, {"error": "one line"}, with its status: 400 malformed request or not an
image, 403 a cross-origin POST, 404, 405, 411 no Content-Length, 413 body or image too large,
408 a client too slow to send its body, 422 blank image, 503 busy, 500 a bug (logged; the server
keeps serving). Numbers are ASCII digits within their range, JSON is at most MAX_JSON_DEPTH deep.
A request must be whole within REQUEST_TIMEOUT of its first byte (a client too slow with its
request line or headers is closed, with one log line), and at most MAX_CONNECTIONS connections
are served at once. A client's timeout or reset is one log line, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import math
import re
import secrets
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from nn.mnist.explain import trace as explaining
from nn.mnist.explain.atlas import kernel_atlas, paletted
from nn.mnist.explain.web import backward_json, data_url, kernel_json, view_json
from nn.mnist.classify import Classifier, load_classifier, prediction_json, rank
from nn.mnist import modelfile
from nn.mnist.modelfile import ModelFileError
from nn.mnist.preprocess import BlankImageError, ImageError, ImageTooLargeError, preprocess_explained
from nn.mnist.watch import Watch, WatchError
from nn.layers import Conv2d
from nn.model import Sequential
from nn.optim import SGD

MAX_BODY = 10 * 1024 * 1024  # bytes: a drawing is ~10 kB, a phone photo a few MB
DEFAULT_TOP_K = 5
MAX_TOP_K = 100
REQUEST_TIMEOUT = 10  # seconds a client may take to send its request, from its first byte
MAX_CONNECTIONS = 64  # served at once; the next waits in the listen queue for one to end
MAX_JSON_DEPTH = 32  # nested arrays and objects in a JSON body (the API's need one)
DIGITS = re.compile(r"[0-9]{1,4000}")  # str.isdigit() takes "²", which int() refuses
PAGE = "serve.html"
LISTEN_QUEUE = 128  # connections the kernel holds before accept(): a burst of clients, not resets
DOCS = Path(__file__).resolve().parents[2] / "docs"  # the guide, in a source checkout
DOC_PAGES = sorted({page for _, page in explaining.LAYER_DOCS.values()})
MAX_SESSIONS = 16  # private copies of a model that "teach it" changes (the CNN's: ~1.7 MB each)
SESSION_TTL = 600  # seconds a session lives after its last use
MAX_TEACH_STEPS = 20  # gradient-descent steps per teach request
MAX_LR = 1.0


class RequestError(Exception):
    """A request the server refuses; `status` and a one-line message for the client."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def integer(value, name: str, low: int, high: int | None = None) -> int:
    """A request's integer, a JSON number or ASCII digits, from `low` to `high`; else 400."""
    if isinstance(value, str) and DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or \
            (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer {bounds}, not {shown}")
    return value


STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # JSON strings, escapes included


def parse_json(body: bytes):
    """A JSON body at most MAX_JSON_DEPTH deep (its size is MAX_BODY's); else 400. The depth is
    counted before parsing: the parser recurses once per level."""
    bare = np.frombuffer(STRINGS.sub(b'""', body), np.uint8)  # brackets in strings do not nest
    steps = ((bare == ord("[")) | (bare == ord("{"))).astype(np.int32) - \
        ((bare == ord("]")) | (bare == ord("}")))
    if steps.size and np.cumsum(steps).max() > MAX_JSON_DEPTH:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed JSON (nested over {MAX_JSON_DEPTH} deep)")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed JSON ({e})") from None


@dataclass
class Model:
    """A loaded classifier and the lock that serialises its forward passes.

    The layers keep caches and the fast engine reuses scratch buffers, so one model must not
    run two forward passes at once; preprocessing, most of a request's time, runs in parallel.
    `reference` is the same weights on the plain layers: the layers view's pass (explain).
    """

    classifier: Classifier
    lock: threading.Lock
    reference: Sequential


def load_models(paths: dict[str, Path], engine: str = "fast") -> dict[str, Model]:
    """Load each model once ({"mlp": path, "cnn": path}) on `engine`; ModelFileError (one line)
    if any fails.

    The MLP must read one digit (28x28) and the CNN two (28x56): the page picks by that.
    """
    expected = {"mlp": 28, "cnn": 56}
    models = {}
    for name, path in paths.items():
        classifier = load_classifier(path, engine=engine)
        want = expected.get(name)
        if want is not None and classifier.width != want:
            raise ModelFileError(f"{path}: reads 28x{classifier.width} images, but --{name} "
                                 f"needs a {'one' if want == 28 else 'two'}-digit model (28x{want})")
        models[name] = Model(classifier, threading.Lock(), explaining.reference_copy(classifier.net))
    return models


def decode_image(body: bytes, content_type: str) -> tuple[bytes, dict]:
    """The image bytes of a request body and the JSON fields beside it ({} for a raw body)."""
    if not body:
        raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: send an image")
    fields: dict = {}
    if content_type.split(";")[0].strip().lower() == "application/json":
        fields = parse_json(body)
        if not isinstance(fields, dict) or not isinstance(fields.get("image"), str):
            raise RequestError(HTTPStatus.BAD_REQUEST, 'JSON body needs "image": a data URL or base64 string')
        text = fields.pop("image")
    elif body[:5] == b"data:":
        text = body.decode("ascii", errors="replace")
    else:
        return body, fields
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "data URL must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode(text, validate=True), fields
    except (binascii.Error, ValueError) as e:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed base64 ({e})") from None


def _option(query: dict, fields: dict, name: str, default):
    """A request option from the JSON body, else the query string, else the default."""
    if name in fields:
        return fields[name]
    if name in query:
        return query[name][-1]
    return default


def class_index(classifier: Classifier, label) -> int | None:
    """The index of class `label` ("7", "71") of a model; None for None (the top class)."""
    if label is None:
        return None
    if not isinstance(label, str) or label not in classifier.classes:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"label must be one of the model's classes "
                           f"({classifier.classes[0]} to {classifier.classes[-1]}), not {label!r}")
    return classifier.classes.index(label)


def predict(models: dict[str, Model], image: bytes, model: str, top_k, explain: bool = False,
            backward: bool = False, label=None) -> dict:
    """One image through the same path as `nn predict`. -> the response object; with `explain`,
    from the layers view's pass, plus "layers", "saliency" and "saliency_max"; with `backward`,
    plus "backward": each layer's gradient of the loss of `label` (the top class if None)."""
    if not isinstance(model, str) or model not in models:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown model {model!r} (known: {', '.join(models)})")
    top_k = integer(top_k, "top_k", 1, MAX_TOP_K)
    m = models[model]
    c = class_index(m.classifier, label)
    warnings: list[str] = []  # degenerate images (preprocess), then the split's doubts
    x, diag = read_image(m, image, warnings)
    view = {}
    with m.lock:
        if backward or explain:
            h = modelfile.normalize(x[None], m.classifier.info.normalization)
            if backward:
                grad = explaining.backward(m.reference, h, c)
                trace = grad.trace
            else:
                trace = explaining.explain(m.reference, h)
            top = _ranked(trace.proba, m.classifier.classes, top_k)
        else:
            top = rank(m.classifier, x[None], top_k)[0]
    if backward:
        view = backward_json(grad, m.classifier.classes)
    elif explain:
        view = view_json(trace, m.classifier.classes)
    if diag.touches_edge:
        warnings.append("the ink touches the edge of the image: part of a digit may be cut off")
    if diag.split == "halves":
        warnings.append("the digits touch: they were split down the middle of the ink")
    return {
        "model": model,
        **prediction_json(top),
        "diagnostics": {
            "input": data_url(Image.fromarray(x)),
            "input_shape": list(x.shape),
            "size": list(diag.size),
            "boxes": [list(b) for b in diag.boxes],
            "split": diag.split,
            "warnings": warnings,
        },
        **view,
    }


def _ranked(proba: np.ndarray, classes: list[str], top_k: int) -> list[tuple[str, float]]:
    """The top_k (label, probability) pairs of a (K,) probability vector, best first."""
    order = np.argsort(-proba, kind="stable")[:min(top_k, len(classes))]
    return [(classes[i], float(proba[i])) for i in order]


def read_image(m: Model, image: bytes, warnings: list[str]):
    """The image as `m` reads it: (x (28, W) uint8, diagnostics); RequestError if it cannot be read."""
    try:
        return preprocess_explained(io.BytesIO(image), m.classifier.width, notes=warnings)
    except ImageTooLargeError as e:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(e)) from None
    except BlankImageError as e:
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(e)) from None
    except ImageError as e:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None


@dataclass
class Session:
    """One page's private copy of a served model, which "teach it" changes."""

    model: str
    net: Sequential
    lock: threading.Lock
    used: float  # the clock's time of its last use
    steps: int = 0


class Sessions:
    """The sessions of one server: at most `limit` (the least recently used goes when a new one
    needs its place), each forgotten `ttl` seconds after its last use. Thread-safe."""

    def __init__(self, limit: int = MAX_SESSIONS, ttl: float = SESSION_TTL, clock=time.monotonic):
        self.limit, self.ttl, self.clock = limit, ttl, clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def _expire(self) -> None:
        now = self.clock()
        for sid in [sid for sid, s in self._sessions.items() if now - s.used > self.ttl]:
            del self._sessions[sid]

    def new(self, model: str, m: Model) -> tuple[str, Session]:
        """A new session with a copy of m's weights (m's arrays are never written)."""
        net = explaining.reference_copy(m.reference)
        with self._lock:
            self._expire()
            while len(self._sessions) >= self.limit:
                del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].used)]
            sid = secrets.token_urlsafe(12)
            self._sessions[sid] = session = Session(model, net, threading.Lock(), self.clock())
        return sid, session

    def get(self, sid, model: str | None = None) -> Session:
        """The live session `sid`; RequestError 410 if it is unknown or expired, 400 if it is
        another model's."""
        with self._lock:
            self._expire()
            session = self._sessions.get(sid) if isinstance(sid, str) else None
            if session is None:
                raise RequestError(HTTPStatus.GONE, f"session {str(sid)[:40]!r} is unknown or expired (sessions "
                                   f"last {self.ttl:g} s after their last use): teach again to start a new one")
            if model is not None and session.model != model:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"session {sid!r} is a copy of the {session.model} model, "
                                   f"not {model!r}")
            session.used = self.clock()
            return session

    def drop(self, sid) -> None:
        self.get(sid)
        with self._lock:
            self._sessions.pop(sid, None)


def _bounded_float(name: str, value, hi: float) -> float:
    """A request's positive number option (a number, or a decimal string), over 0 and at most hi."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{0,9}\.?[0-9]{1,9}([eE][-+]?[0-9]{1,3})?", value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= hi:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be a number over 0 and at most {hi:g}, not {value!r}")
    return float(value)


def _summary(grad: explaining.Gradients, classes: list[str], top_k: int = DEFAULT_TOP_K) -> dict:
    """A model's answer on the taught image: its prediction and the taught label's loss."""
    return {**prediction_json(_ranked(grad.trace.proba, classes, top_k)),
            "loss": round(grad.loss, 6), "label_probability": round(float(grad.trace.proba[grad.label]), 6)}


def _kernel_picture(w: np.ndarray, scale: float) -> str:
    return data_url(paletted(kernel_atlas(w, scale)))


def _kernels_changed(net: Sequential, before: dict[int, np.ndarray]) -> list[dict]:
    """Each Conv2d's kernels before and after, on one scale, and their change on its own."""
    views = []
    for i, w0 in before.items():
        w1 = net.layers[i].params["W"]
        delta = w1 - w0
        m, dm = max(float(np.abs(w0).max()), float(np.abs(w1).max())), float(np.abs(delta).max())
        change = np.sqrt((delta ** 2).sum(axis=(0, 1, 2)))  # (C_out,) how far each kernel moved
        views.append({"layer": i, "shape": list(w0.shape), "max": m, "change_max": dm,
                      "before": _kernel_picture(w0, m), "after": _kernel_picture(w1, m),
                      "change": _kernel_picture(delta, dm),
                      "changed": [int(c) for c in np.argsort(-change, kind="stable")[:4]],
                      "relative_change": round(float(np.sqrt((delta ** 2).sum() / (w0 ** 2).sum())), 8)})
    return views


def teach(models: dict[str, Model], sessions: Sessions, image: bytes, model, label, steps, lr, session) -> dict:
    """POST /api/teach: `steps` steps of gradient descent (SGD, learning rate `lr`) on the image
    with `label`, on the session's private copy of the model (a new session if `session` is
    None). The served model is only read. -> the prediction and loss before and after, the loss
    after each step, and each convolution's kernels before and after."""
    if not isinstance(model, str) or model not in models:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown model {model!r} (known: {', '.join(models)})")
    m = models[model]
    if label is None:
        raise RequestError(HTTPStatus.BAD_REQUEST, "label is required: the label to teach (\"7\", \"71\")")
    c = class_index(m.classifier, label)
    steps = integer(steps, "steps", 1, MAX_TEACH_STEPS)
    lr = _bounded_float("lr", lr, MAX_LR)
    live = sessions.get(session, model) if session is not None else None  # a stale one fails before the work
    x, diag = read_image(m, image, [])
    sid, live = (session, live) if live is not None else sessions.new(model, m)
    h = modelfile.normalize(x[None], m.classifier.info.normalization)
    classes = m.classifier.classes
    with live.lock:
        grad = explaining.backward(live.net, h, c)
        before = _summary(grad, classes)
        kernels = {i: layer.params["W"].copy() for i, layer in enumerate(live.net.layers)
                   if isinstance(layer, Conv2d)}
        optimizer, losses = SGD(lr), [before["loss"]]
        for _ in range(steps):
            optimizer.step(live.net.params, live.net.grads)  # the gradient of the last backward
            grad = explaining.backward(live.net, h, c)
            losses.append(round(grad.loss, 6))
        live.steps += steps
        return {"model": model, "session": sid, "label": classes[c], "steps": steps, "lr": lr,
                "taught": live.steps, "expires_in": sessions.ttl, "before": before,
                "after": _summary(grad, classes), "losses": losses,
                "kernels": _kernels_changed(live.net, kernels),
                "diagnostics": {"input": data_url(Image.fromarray(x)), "input_shape": list(x.shape)}}


def kernel(models: dict[str, Model], query: dict) -> dict:
    """GET /api/kernel's answer: one output channel's kernel of a Conv2d layer."""
    model = _option(query, {}, "model", "cnn")
    if model not in models:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown model {model!r} (known: {', '.join(models)})")
    numbers = {name: integer(_option(query, {}, name, ""), name, 0) for name in ("layer", "channel")}
    try:
        return {"model": model, **kernel_json(models[model].reference, **{
            "index": numbers["layer"], "channel": numbers["channel"]})}
    except ValueError as e:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None


def health(models: dict[str, Model]) -> dict:
    return {
        "status": "ok",
        "max_body": MAX_BODY,
        "models": {
            name: {"path": str(m.classifier.path), "input_shape": list(m.classifier.info.input_shape),
                   "classes": len(m.classifier.classes), "sha256": m.classifier.info.sha256}
            for name, m in models.items()
        },
    }


class Handler(BaseHTTPRequestHandler):
    """Routes by exact path: no file system is ever mapped, so there is nothing to list or traverse."""

    protocol_version = "HTTP/1.1"  # keep-alive: the page predicts as the user draws
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    timeout = REQUEST_TIMEOUT  # for the whole request from its first byte, and between requests
    server: "Server"
    _deadline: float | None = None  # time.monotonic() by which the request being read is whole

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the base class's reader: ours gives each read only the time left
        self.rfile = io.BufferedReader(_Paced(self), 1 << 16)

    def handle_one_request(self) -> None:
        """One request, whole (request line, headers and body) within `timeout` of its first
        byte: a client sending a byte now and then cannot hold its thread, as a timeout per
        read would let it. Waiting for a request to begin is keep-alive's idle time: quiet."""
        self._deadline = None
        try:
            if not self.rfile.peek(1):
                self.close_connection = True  # the client closed
                return
        except (TimeoutError, ConnectionError):
            self.close_connection = True
            return
        self._deadline = time.monotonic() + self.timeout
        try:
            super().handle_one_request()  # a late request line or header: one log line, closed
        finally:
            self._deadline = None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the base class finds (bad request line, unknown method, huge headers): JSON too."""
        self.log_error("%d %s", code, message)
        body = _json({"error": message or HTTPStatus(code).phrase})
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def _dispatch(self, method: str) -> None:
        start = time.perf_counter()
        url = urlsplit(self.path)
        routes = {"/": ("GET", self._page), "/index.html": ("GET", self._page),
                  "/api/health": ("GET", self._health), "/api/predict": ("POST", self._predict),
                  "/api/explain": ("POST", self._explain), "/api/kernel": ("GET", self._kernel),
                  "/api/backward": ("POST", self._backward), "/api/teach": ("POST", self._teach),
                  "/api/reset": ("POST", self._reset), "/api/train": ("GET", self._train),
                  "/api/train/start": ("POST", self._train_start), "/api/train/stop": ("POST", self._train_stop),
                  **{f"/docs/{page}": ("GET", self._doc) for page in DOC_PAGES}}
        try:
            if url.path not in routes:
                raise RequestError(HTTPStatus.NOT_FOUND, f"not found: {url.path}")
            allowed, handle = routes[url.path]
            if method != allowed:
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed on {url.path} (use {allowed})")
            status, content_type, body = handle(parse_qs(url.query))
        except RequestError as e:
            status, content_type, body = e.status, "application/json", _json({"error": str(e)})
        except ConnectionError as e:  # the client went away mid-request: nobody to answer
            self.log_error("%s %s: client gone (%s)", method, url.path, type(e).__name__)
            self.close_connection = True
            return
        except Exception:  # noqa: BLE001 -- a bug must cost one request, not the server
            self.log_error("%s", traceback.format_exc().rstrip())
            status, content_type, body = (HTTPStatus.INTERNAL_SERVER_ERROR, "application/json",
                                          _json({"error": "internal error (see the server's log)"}))
            self.close_connection = True
        # logged before the answer goes out, so the line is there when the client has its answer
        line = f"{method} {url.path} {int(status)} {(time.perf_counter() - start) * 1e3:.0f} ms"
        if status == HTTPStatus.REQUEST_TIMEOUT:
            self.log_error("%s", line)  # a slow client: its one line, even when quiet
        else:
            self.server.log(line)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                         "style-src 'unsafe-inline'; img-src data: blob:; connect-src 'self'")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", routes[url.path][0])
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _page(self, query) -> tuple[HTTPStatus, str, bytes]:
        return HTTPStatus.OK, "text/html; charset=utf-8", self.server.page

    def _health(self, query) -> tuple[HTTPStatus, str, bytes]:
        return HTTPStatus.OK, "application/json", _json(health(self.server.models))

    def _same_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            self.close_connection = True  # the body is not read
            raise RequestError(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin} refused")

    def _predict(self, query, explain: bool = False, backward: bool = False) -> tuple[HTTPStatus, str, bytes]:
        self._same_origin()
        image, fields = decode_image(self._body(), self.headers.get("Content-Type", ""))
        model = _option(query, fields, "model", "cnn")
        top_k = _option(query, fields, "top_k", DEFAULT_TOP_K)
        label = _option(query, fields, "label", None) if backward else None
        return HTTPStatus.OK, "application/json", _json(predict(self.server.models, image, model, top_k, explain,
                                                                backward, label))

    def _explain(self, query) -> tuple[HTTPStatus, str, bytes]:
        return self._predict(query, explain=True)

    def _backward(self, query) -> tuple[HTTPStatus, str, bytes]:
        return self._predict(query, backward=True)

    def _teach(self, query) -> tuple[HTTPStatus, str, bytes]:
        self._same_origin()
        image, fields = decode_image(self._body(), self.headers.get("Content-Type", ""))
        options = {name: _option(query, fields, name, default) for name, default in
                   (("model", "cnn"), ("label", None), ("steps", 1), ("lr", 0.1), ("session", None))}
        return HTTPStatus.OK, "application/json", _json(teach(self.server.models, self.server.sessions, image,
                                                              **options))

    def _watch(self) -> Watch:
        if self.server.watch is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "the training view is off: start nn serve with --watch-data "
                               "FOLDER (train.npz, dev.npz, test.npz)")
        return self.server.watch

    def _train(self, query) -> tuple[HTTPStatus, str, bytes]:
        since = integer(_option(query, {}, "since", 0), "since", 0, 10 ** 9)
        return HTTPStatus.OK, "application/json", _json(self._watch().view(since))

    def _train_start(self, query, stop: bool = False) -> tuple[HTTPStatus, str, bytes]:
        self._same_origin()
        if self.headers.get("Content-Length") is not None:
            self._body()  # read (within the limits) and ignored
        watch = self._watch()
        try:
            if stop:
                watch.stop()
            else:
                watch.start()
        except WatchError as e:
            raise RequestError(HTTPStatus.CONFLICT, str(e)) from None
        return HTTPStatus.OK, "application/json", _json(watch.view(watch.view()["next"]))

    def _train_stop(self, query) -> tuple[HTTPStatus, str, bytes]:
        return self._train_start(query, stop=True)

    def _reset(self, query) -> tuple[HTTPStatus, str, bytes]:
        self._same_origin()
        if self.headers.get("Content-Length") is not None:
            self._body()  # read (within the limits) and ignored: the session is in the query
        sid = _option(query, {}, "session", None)
        self.server.sessions.drop(sid)
        return HTTPStatus.OK, "application/json", _json({"session": sid, "reset": True})

    def _kernel(self, query) -> tuple[HTTPStatus, str, bytes]:
        return HTTPStatus.OK, "application/json", _json(kernel(self.server.models, query))

    def _doc(self, query) -> tuple[HTTPStatus, str, bytes]:
        path = DOCS / urlsplit(self.path).path.removeprefix("/docs/")  # one of DOC_PAGES: routed by exact path
        if not path.is_file():
            raise RequestError(HTTPStatus.NOT_FOUND, f"{path.name} is not here (the guide is in a source checkout)")
        return HTTPStatus.OK, "text/markdown; charset=utf-8", path.read_bytes()

    def _body(self) -> bytes:
        """The request body, refused before reading if it is too large or has no length."""
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if not DIGITS.fullmatch(length):
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the unread body must not be parsed as the next request
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"body of {int(length):,} bytes is over the limit of {MAX_BODY:,}")
        try:
            body = self.rfile.read(int(length))  # by the request's deadline (_Paced)
        except TimeoutError:
            self.close_connection = True
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"body not received within {self.timeout} s") from None
        if len(body) < int(length):
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, "body shorter than its Content-Length")
        return body

    def log_request(self, code="-", size="-") -> None:
        pass  # _dispatch logs each request with its time instead

    def log_message(self, format: str, *args) -> None:  # noqa: A002 -- the base class's name
        print(f"{self.address_string()}: {format % args}", file=sys.stderr, flush=True)  # errors only


class _Paced(io.RawIOBase):
    """A handler's connection as a raw stream whose every read gets only the time left before
    the handler's deadline (none between requests: the socket's timeout)."""

    def __init__(self, handler: Handler):
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        h = self.handler
        if h._deadline is None:
            return h.connection.recv_into(buffer)
        if (wait := h._deadline - time.monotonic()) <= 0:
            raise TimeoutError(f"request not received within {h.timeout} s of its first byte")
        h.connection.settimeout(wait)
        try:
            return h.connection.recv_into(buffer)
        except TimeoutError:
            raise TimeoutError(f"request not received within {h.timeout} s of its first byte") from None
        finally:
            h.connection.settimeout(h.timeout)


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


class Server(ThreadingHTTPServer):
    """The demo's HTTP server: the loaded models and the page, shared by all request threads."""

    daemon_threads = True  # Ctrl-C does not wait for open keep-alive connections
    request_queue_size = LISTEN_QUEUE

    def __init__(self, address: tuple[str, int], models: dict[str, Model], quiet: bool = False,
                 watch: Watch | None = None):
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.held, self.held_lock = set(), threading.Lock()  # the connections holding a slot
        self.models = models
        self.watch = watch  # the training view, or None (off)
        self.sessions = Sessions()  # "teach it": private copies of the models, per page
        self.page = resources.files(__package__).joinpath(PAGE).read_bytes()
        self.quiet = quiet
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)

    def process_request(self, request, client_address) -> None:
        """A thread per connection, at most MAX_CONNECTIONS at once: the next waits in the
        listen queue for one of them to end (each ends within Handler.timeout of going quiet,
        so a crowd of slow clients cannot keep them), and is refused with 503 after as long."""
        if not self.slots.acquire(timeout=Handler.timeout):
            self.refuse(request, client_address)
            return
        with self.held_lock:
            self.held.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:  # Ctrl-C may land before or after the thread started
            self.release_slot(request)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.release_slot(request)

    def release_slot(self, request) -> None:
        """Give back the slot `request` holds, once, whichever of its thread and the listening
        thread gets here first (a double release is a ValueError of the BoundedSemaphore)."""
        with self.held_lock:
            if request not in self.held:
                return
            self.held.discard(request)
        self.slots.release()

    def refuse(self, request, client_address) -> None:
        message = f"busy: {MAX_CONNECTIONS} connections open, try again"
        print(f"{client_address[0]}: 503 {message}", file=sys.stderr, flush=True)
        body = _json({"error": message})
        try:
            request.settimeout(1)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
                            % (len(body), body))
        except OSError:
            pass  # gone already
        self.shutdown_request(request)

    def server_close(self) -> None:
        """Close the socket and stop the training view's run with the server."""
        super().server_close()
        if self.watch is not None:
            self.watch.close()

    def handle_error(self, request, client_address) -> None:
        """A client's reset or timeout outside a request's handling: one line; a bug: the traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            print(f"{client_address[0]}: connection dropped ({type(error).__name__})", file=sys.stderr, flush=True)
        else:
            super().handle_error(request, client_address)

    def log(self, line: str) -> None:
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
