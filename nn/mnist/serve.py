"""`nn serve`: a local web page to draw a digit or a two-digit number and watch the networks read it.

Standard library only (http.server) around the same path as `nn predict`: nn.mnist.classify
loads each model once at start, nn.mnist.preprocess reads each image. The page is one static
file, serve.html, beside this module; nothing is fetched from elsewhere, so it works offline.

    GET  /, /index.html   the page
    GET  /api/health      {"status": "ok", "models": {"mlp": {...}, "cnn": {...}}}
    POST /api/predict     an image -> nn predict's JSON object plus "model" and "diagnostics"
    POST /api/explain     the same, plus every layer's output and the saliency (nn.mnist.explain)
    GET  /api/kernel      ?model=cnn&layer=1&channel=0: one Conv2d kernel, numbers and picture
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
import re
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

from nn.mnist import explain as explaining
from nn.mnist.classify import Classifier, load_classifier, prediction_json, rank
from nn.mnist import modelfile
from nn.mnist.modelfile import ModelFileError
from nn.mnist.preprocess import BlankImageError, ImageError, ImageTooLargeError, preprocess_explained
from nn.model import Sequential

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


def predict(models: dict[str, Model], image: bytes, model: str, top_k, explain: bool = False) -> dict:
    """One image through the same path as `nn predict`. -> the response object; with `explain`,
    from the layers view's pass, plus "layers", "saliency" and "saliency_max"."""
    if not isinstance(model, str) or model not in models:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown model {model!r} (known: {', '.join(models)})")
    top_k = integer(top_k, "top_k", 1, MAX_TOP_K)
    m = models[model]
    warnings: list[str] = []  # degenerate images (preprocess), then the split's doubts
    try:
        x, diag = preprocess_explained(io.BytesIO(image), m.classifier.width, notes=warnings)
    except ImageTooLargeError as e:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(e)) from None
    except BlankImageError as e:
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(e)) from None
    except ImageError as e:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
    view = {}
    with m.lock:
        if explain:
            trace = explaining.explain(m.reference, modelfile.normalize(x[None], m.classifier.info.normalization))
            order = np.argsort(-trace.proba, kind="stable")[:min(top_k, len(m.classifier.classes))]
            top = [(m.classifier.classes[i], float(trace.proba[i])) for i in order]
        else:
            top = rank(m.classifier, x[None], top_k)[0]
    if explain:
        view = explaining.view_json(trace, m.classifier.classes)
    if diag.touches_edge:
        warnings.append("the ink touches the edge of the image: part of a digit may be cut off")
    if diag.split == "halves":
        warnings.append("the digits touch: they were split down the middle of the ink")
    return {
        "model": model,
        **prediction_json(top),
        "diagnostics": {
            "input": explaining.data_url(Image.fromarray(x)),
            "input_shape": list(x.shape),
            "size": list(diag.size),
            "boxes": [list(b) for b in diag.boxes],
            "split": diag.split,
            "warnings": warnings,
        },
        **view,
    }


def kernel(models: dict[str, Model], query: dict) -> dict:
    """GET /api/kernel's answer: one output channel's kernel of a Conv2d layer."""
    model = _option(query, {}, "model", "cnn")
    if model not in models:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown model {model!r} (known: {', '.join(models)})")
    numbers = {name: integer(_option(query, {}, name, ""), name, 0) for name in ("layer", "channel")}
    try:
        return {"model": model, **explaining.kernel_json(models[model].reference, **{
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

    def _predict(self, query, explain: bool = False) -> tuple[HTTPStatus, str, bytes]:
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            self.close_connection = True  # the body is not read
            raise RequestError(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin} refused")
        image, fields = decode_image(self._body(), self.headers.get("Content-Type", ""))
        model = _option(query, fields, "model", "cnn")
        top_k = _option(query, fields, "top_k", DEFAULT_TOP_K)
        return HTTPStatus.OK, "application/json", _json(predict(self.server.models, image, model, top_k, explain))

    def _explain(self, query) -> tuple[HTTPStatus, str, bytes]:
        return self._predict(query, explain=True)

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

    def __init__(self, address: tuple[str, int], models: dict[str, Model], quiet: bool = False):
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.models = models
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
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
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
