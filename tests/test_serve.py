"""`nn serve` (nn/mnist/serve.py): the API against a real server on an ephemeral port, and the command."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import servefakes
from nn.mnist import serve as web
from nn.mnist.cli import app
from nn.mnist.preprocess import preprocess, preprocess_explained
from servefakes import BAD_POSTS, drawing, post, raw, rendered, request, running_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory) -> dict[str, Path]:
    return servefakes.untrained_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(model_paths):
    with running_server(model_paths) as s:
        yield s


# --- the page and health ----------------------------------------------------------------


def test_page_is_one_self_contained_file(server):
    for path in ("/", "/index.html"):
        status, body, headers = request(server, "GET", path)
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"<canvas" in body and b'id="upload"' in body
        assert not re.search(rb"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", body)
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_health_reports_the_loaded_models(server, model_paths):
    status, body, _ = request(server, "GET", "/api/health")
    assert status == 200 and body["status"] == "ok" and body["max_body"] == web.MAX_BODY
    assert body["models"]["mlp"]["path"] == str(model_paths["mlp"])
    assert body["models"]["mlp"]["input_shape"] == [28, 28, 1] and body["models"]["mlp"]["classes"] == 10
    assert body["models"]["cnn"]["input_shape"] == [28, 56, 1] and body["models"]["cnn"]["classes"] == 100


# --- predictions: the same as nn predict --json, plus diagnostics ---------------------


@pytest.mark.parametrize("model,text", [("mlp", "7"), ("cnn", "71")])
def test_prediction_is_nn_predict_json_plus_diagnostics(server, model_paths, tmp_path, model, text):
    image = drawing(text)
    status, body, _ = post(server, image, model, top_k=5)
    assert status == 200
    file = tmp_path / "drawn.png"
    file.write_bytes(image)
    r = CliRunner().invoke(app, ["predict", str(file), "--model", str(model_paths[model]), "--json", "-k", "5"])
    (expected,) = json.loads(r.stdout)
    assert list(body) == ["model", "label", "probability", "top_k", "diagnostics"]
    assert body["model"] == model and {k: body[k] for k in ("label", "probability", "top_k")} == {
        k: expected[k] for k in ("label", "probability", "top_k")}
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["diagnostics"]["input"].split(",", 1)[1]))))
    assert np.array_equal(seen, preprocess(file, 28 if model == "mlp" else 56))
    assert body["diagnostics"]["input_shape"] == list(seen.shape)


def test_both_engines_give_the_same_answer(server, model_paths):
    image = drawing("71")
    _, fast, _ = post(server, image, top_k=100)  # every class: no near-tie can reorder the list's end
    with running_server(model_paths, engine="reference") as reference_server:
        _, reference, _ = post(reference_server, image, top_k=100)
    assert reference["diagnostics"] == fast["diagnostics"]
    ranked = [{t["label"]: t["probability"] for t in body["top_k"]} for body in (fast, reference)]
    assert ranked[0].keys() == ranked[1].keys() and len(ranked[0]) == 100
    for label, p in ranked[0].items():
        assert ranked[1][label] == pytest.approx(p, abs=2e-6)


def test_the_engine_choices_are_nn_engines():
    import typing

    from nn.engine import ENGINES
    from nn.mnist.cli import serve

    engine = typing.get_type_hints(serve, include_extras=True)["engine"]
    assert typing.get_args(typing.get_args(engine)[0]) == ENGINES


def test_data_url_in_json_or_as_the_body_is_the_same_image(server):
    image = drawing("47")
    _, expected, _ = post(server, image)
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    as_json = json.dumps({"image": url, "model": "cnn", "top_k": 5}).encode()
    assert request(server, "POST", "/api/predict", as_json, {"Content-Type": "application/json"})[1] == expected
    plain_b64 = json.dumps({"image": base64.b64encode(image).decode()}).encode()
    assert request(server, "POST", "/api/predict", plain_b64, {"Content-Type": "application/json"})[1] == expected
    assert post(server, url.encode(), content_type="text/plain")[1] == expected


def test_diagnostics_show_the_split_and_warn(server):
    _, body, _ = post(server, drawing("71"))
    d = body["diagnostics"]
    assert d["split"] == "gap" and len(d["boxes"]) == 2 and d["warnings"] == []
    (l0, _, l1, _), (r0, _, r1, _) = d["boxes"]
    assert l0 < l1 < r0 < r1 <= d["size"][0]

    _, body, _ = post(server, drawing("7"), "mlp")
    assert body["diagnostics"]["split"] is None and len(body["diagnostics"]["boxes"]) == 1

    _, body, _ = post(server, drawing("44", gap=-0.35))  # overlapping: one connected stroke
    assert body["diagnostics"]["split"] == "halves"
    assert any("digits touch" in w for w in body["diagnostics"]["warnings"])

    cut = Image.open(io.BytesIO(drawing("7"))).crop((60, 0, 200, 200))  # the bar runs off the left edge
    _, body, _ = post(server, servefakes.png(cut), "mlp")
    assert any("touches the edge" in w for w in body["diagnostics"]["warnings"])


def test_explained_boxes_are_in_image_pixels():
    image = Image.open(io.BytesIO(drawing("17")))
    x, d = preprocess_explained(image, 56)
    assert np.array_equal(x, preprocess(image, 56)) and d.size == image.size
    ink = np.asarray(image.convert("L")) < 128
    cols = np.flatnonzero(ink.any(axis=0))
    assert abs(d.boxes[0][0] - cols[0]) <= 2 and abs(d.boxes[1][2] - (cols[-1] + 1)) <= 2


# --- bad requests: status, one-line JSON error, and the server keeps serving ----------



@pytest.mark.parametrize("endpoint", ["predict", "explain"])
@pytest.mark.parametrize("name", BAD_POSTS)
def test_bad_post_is_a_status_and_a_one_line_json_error(server, name, endpoint):
    body, content_type, query, status, message = BAD_POSTS[name]
    got, answer, headers = request(server, "POST", f"/api/{endpoint}?{query}", body, {"Content-Type": content_type})
    assert (got, headers["Content-Type"]) == (status, "application/json")
    assert list(answer) == ["error"] and answer["error"].startswith(message) and "\n" not in answer["error"]
    assert request(server, "GET", "/api/health")[0] == 200


@pytest.mark.parametrize("path", ["/nope", "/api", "/api/", "/serve.html", "/nn/mnist/serve.py", "/../pyproject.toml",
                                  "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/static/", "/index.html/"])
def test_unknown_paths_are_404_no_files_no_listing(server, path):
    status, body, _ = request(server, "GET", path)
    assert status == 404 and list(body) == ["error"] and body["error"].startswith("not found: /")


def test_wrong_method_is_405_with_allow(server):
    status, body, headers = request(server, "GET", "/api/predict")
    assert status == 405 and headers["Allow"] == "POST" and "use POST" in body["error"]
    status, _, headers = request(server, "POST", "/", b"x")
    assert status == 405 and headers["Allow"] == "GET"
    assert raw(server, b"DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 405")
    answer = raw(server, b"PATCH / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501") and answer.endswith(b'{"error": "Unsupported method (\'PATCH\')"}')


def test_body_over_the_limit_is_413_before_it_is_read(server):
    answer = raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: %d\r\n\r\n" % (web.MAX_BODY + 1) + b"\x89PNG")
    assert answer.startswith(b"HTTP/1.1 413") and b"Connection: close" in answer
    assert b'"error": "body of 10,485,761 bytes is over the limit of 10,485,760"' in answer


@pytest.mark.parametrize("headers,status,message", [
    (b"", 411, b"Content-Length required"),
    (b"Content-Length: -5\r\n", 400, b"bad Content-Length '-5'"),
    (b"Content-Length: 50\r\n", 400, b"body shorter than its Content-Length"),
])
def test_bad_lengths(server, headers, status, message):
    head = b"POST /api/predict HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(head + b"short")
        s.shutdown(socket.SHUT_WR)  # the client gives up: the server must not wait for the rest
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 %d" % status) and message in answer


def test_garbage_request_line_and_cross_origin_post(server):
    answer = raw(server, b"\x16\x03\x01 not http at all\r\n\r\n")  # e.g. https:// to an http port
    assert answer.startswith(b'{"error": "Bad request') and len(answer) < 200
    status, body, _ = request(server, "POST", "/api/predict", drawing("7"),
                              {"Content-Type": "image/png", "Origin": "http://evil.example"})
    assert status == 403 and body["error"] == "cross-origin request from http://evil.example refused"
    host = "%s:%d" % server.server_address[:2]
    status, _, _ = request(server, "POST", "/api/predict", drawing("71"),
                           {"Content-Type": "image/png", "Origin": f"http://{host}"})
    assert status == 200
    assert request(server, "GET", "/api/health")[0] == 200


def test_a_bug_costs_one_request_not_the_server(server, monkeypatch, capfd):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(web, "rank", broken)
    status, body, _ = post(server, drawing("71"))
    assert status == 500 and body == {"error": "internal error (see the server's log)"}
    assert "RuntimeError: boom" in capfd.readouterr().err
    monkeypatch.undo()
    assert post(server, drawing("71"))[0] == 200


def test_concurrent_requests_get_their_own_answers(server):
    images = [(drawing(t), "cnn") for t in ("71", "47", "14", "77", "11", "41")] + \
             [(drawing(t), "mlp") for t in ("1", "4", "7")]
    expected = [post(server, img, model)[1] for img, model in images]
    jobs = [i % len(images) for i in range(72)]
    barrier = threading.Barrier(12)

    def one(i):
        if i < 12:
            barrier.wait()  # the first twelve start together
        return post(server, *images[i])[1]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, jobs))
    assert all(results[n] == expected[i] for n, i in enumerate(jobs))


def test_a_burst_of_100_clients_all_get_their_answer(server):
    """More clients at once than Python's default listen queue (5) holds: none is reset."""
    assert server.request_queue_size >= 128
    body = drawing("71")
    barrier = threading.Barrier(100, timeout=30)

    def one(_):
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
        try:
            barrier.wait()  # all connect at the same moment
            conn.request("POST", "/api/predict?model=cnn", body, {"Content-Type": "image/png"})
            r = conn.getresponse()
            return r.status, json.loads(r.read())["label"]
        finally:
            conn.close()

    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(one, range(100)))
    assert answers == [(200, post(server, body)[1]["label"])] * 100
    assert request(server, "GET", "/api/health")[0] == 200


@pytest.fixture
def loud_server(model_paths, monkeypatch):
    """A server that logs each request, whose clients have 0.3 s to send a request."""
    monkeypatch.setattr(web.Handler, "timeout", 0.3)
    with running_server(model_paths, quiet=False) as s:
        yield s


def test_a_stalled_body_is_408_and_one_log_line(loud_server, capfd):
    head = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(loud_server.server_address[:2], timeout=10) as s:
        s.sendall(head + b"\x89PNG")  # ... and nothing more: the client stalls mid-body
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 408") and answer.endswith(b'{"error": "body not received within 0.3 s"}')
    assert b"Connection: close" in answer
    assert request(loud_server, "GET", "/api/health")[0] == 200
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "/api/predict" in line]
    assert len(lines) == 1 and "POST /api/predict 408" in lines[0]
    assert "Traceback" not in err


def test_a_body_sent_a_byte_at_a_time_still_meets_the_deadline(loud_server, capfd):
    head = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(loud_server.server_address[:2], timeout=10) as s:
        s.sendall(head)
        t0 = time.monotonic()
        for _ in range(20):  # each byte well within 0.3 s of the last: only a deadline stops it
            if select.select([s], [], [], 0)[0]:
                break  # the server has answered
            s.sendall(b"x")
            time.sleep(0.1)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 1.9
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_reset_mid_body_is_one_line_no_traceback(loud_server, capfd):
    head = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    s = socket.create_connection(loud_server.server_address[:2], timeout=10)
    s.sendall(head + b"\x89PNG")
    time.sleep(0.1)  # the server is now reading the body
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = RST
    s.close()
    time.sleep(0.2)
    assert request(loud_server, "GET", "/api/health")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "/api/predict" in line]) <= 1


def test_keep_alive_serves_many_requests_on_one_connection(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    for text in ("71", "47", "14"):
        conn.request("POST", "/api/predict?model=cnn", drawing(text), {"Content-Type": "image/png"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["model"] == "cnn"
    conn.close()


# --- trained models: rendered MNIST test images are read correctly --------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    paths = servefakes.trained_models(tmp_path_factory.mktemp("trained"))
    if paths is None:
        pytest.skip("no data/mnist and data/mnist100 (run `dvc repro`)")
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("model,split", [("mlp", "mnist/test.npz"), ("cnn", "mnist100/test.npz")])
def test_rendered_test_images_are_predicted_correctly(trained, model, split):
    from nn.mnist.classify import load_classifier, rank

    x, y = servefakes.load_split(split, 60)
    classifier = load_classifier(trained[model])
    right = [i for i, top in enumerate(rank(classifier, x, 1)) if top[0][0] == classifier.classes[y[i]]]
    assert len(right) >= 40  # the model itself reads most of them
    with running_server(trained) as server:
        got = [post(server, rendered(x[i]), model)[1]["label"] for i in right]
    correct = sum(g == classifier.classes[y[i]] for g, i in zip(got, right))
    assert correct >= 0.95 * len(right), f"{correct} of {len(right)} read correctly through the API"


# --- the command --------------------------------------------------------------------------


def serve(*args: str):
    return CliRunner().invoke(app, ["serve", *map(str, args)])


def test_missing_or_wrong_model_fails_at_start_with_one_line(tmp_path, model_paths):
    r = serve("--mlp", tmp_path / "none.npz", "--cnn", model_paths["cnn"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr == f"error: {tmp_path / 'none.npz'}: no such file\n"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip" * 10)
    r = serve("--mlp", model_paths["mlp"], "--cnn", bad)
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and "not an .npz archive" in r.stderr
    r = serve("--mlp", model_paths["cnn"], "--cnn", model_paths["cnn"])
    assert r.exit_code == 2 and r.stderr == (f"error: {model_paths['cnn']}: reads 28x56 images, but --mlp "
                                             "needs a one-digit model (28x28)\n")


def test_port_in_use_fails_with_one_line(server, model_paths):
    host, port = server.server_address[:2]
    r = serve("--mlp", model_paths["mlp"], "--cnn", model_paths["cnn"], "--port", port)
    assert r.exit_code == 1 and r.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port} (")


@pytest.mark.parametrize("host,warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_nn_serve_prints_its_url_and_serves_until_interrupted(model_paths, host, warned):
    exe = Path(sys.executable).parent / "nn"
    proc = subprocess.Popen([str(exe), "serve", "--host", host, "--port", "0", "--mlp", model_paths["mlp"],
                             "--cnn", model_paths["cnn"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"nn serve: http://([\d.]+):(\d+)/  \(Ctrl-C to stop\)\n", line)
        assert m and m[1] == host, line
        conn = http.client.HTTPConnection("127.0.0.1", int(m[2]), timeout=10)
        conn.request("GET", "/api/health")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert ("warning: listening on 0.0.0.0" in err) == warned
    assert "GET /api/health 200" in err  # one log line per request


# --- strict parsing: whatever a client sends wrong is a 400, never a 500 ---------------------

@pytest.mark.parametrize("path, message", [
    ("/api/kernel?model=cnn&layer=%C2%B2&channel=0", "layer must be an integer >= 0, not '²'"),
    ("/api/kernel?model=cnn&layer=1&channel=%C2%B2", "channel must be an integer >= 0, not '²'"),
    ("/api/kernel?model=cnn&layer=%D9%A1&channel=0", "layer must be an integer >= 0, not '١'"),
    ("/api/kernel?model=cnn&layer=" + "9" * 5000 + "&channel=0",
     "layer must be an integer >= 0, not '99999"),
    ("/api/kernel?model=cnn&layer=+1&channel=0", "layer must be an integer >= 0, not ' 1'"),
])
def test_kernel_numbers_are_ascii_digits(server, path, message):
    status, body, _ = request(server, "GET", path)
    assert status == 400 and list(body) == ["error"] and body["error"].startswith(message), body


@pytest.mark.parametrize("body, content_type, query, message", [
    (drawing("7"), "image/png", "top_k=%C2%B2", "top_k must be an integer from 1 to 100, not '²'"),
    (drawing("7"), "image/png", "top_k=" + "7" * 5000, "top_k must be an integer from 1 to 100"),
    (b'{"image": "AAAA", "top_k": "\\u00b2"}', "application/json", "",
     "top_k must be an integer from 1 to 100, not '²'"),
    (b'{"image": "AAAA", "top_k": 5.0}', "application/json", "", "top_k must be an integer"),
    (b'{"image": "AAAA", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "application/json", "",
     "malformed JSON (nested over 32 deep)"),
    (b'{"image": "AAAA", "x": ' + b"{\"a\": " * 33 + b"1" + b"}" * 33 + b"}", "application/json", "",
     "malformed JSON (nested over 32 deep)"),
])
def test_bad_numbers_and_deep_json_are_400(server, body, content_type, query, message):
    status, answer, _ = request(server, "POST", f"/api/predict?model=cnn&{query}", body,
                                {"Content-Type": content_type})
    assert status == 400 and answer["error"].startswith(message), answer
    assert request(server, "GET", "/api/health")[0] == 200


def test_brackets_inside_json_strings_do_not_count_as_depth(server):
    text = base64.b64encode(drawing("71")).decode()
    body = json.dumps({"image": text, "note": "[" * 100 + '"{' * 50}).encode()
    status, answer, _ = request(server, "POST", "/api/predict", body, {"Content-Type": "application/json"})
    assert status == 200 and answer["label"] == post(server, drawing("71"))[1]["label"]


def test_a_content_length_of_superscript_two_is_400(server):
    answer = raw(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\nxx")
    assert answer.startswith(b"HTTP/1.1 400") and answer.endswith(b'{"error": "bad Content-Length \'\\u00b2\'"}')


# --- a deadline on the whole request, and a bound on the connections held ---------------------

def trickle(server, data: bytes, pause: float = 0.05, limit: float = 3.0) -> tuple[bytes, float]:
    """Send `data` a byte every `pause` s until the server answers or closes; (answer, seconds)."""
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        t0 = time.monotonic()
        for byte in data:
            if select.select([s], [], [], 0)[0] or time.monotonic() - t0 > limit:
                break  # the server has answered or closed
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(pause)
        try:
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        except ConnectionResetError:
            answer = b""
        return answer, time.monotonic() - t0


@pytest.mark.parametrize("data", [
    b"GET /api/health HTTP/1.1\r\n" * 4,                              # the request line
    b"GET /api/health HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n",  # a header
])
def test_a_request_line_or_headers_trickled_in_are_cut_at_the_deadline(loud_server, capfd, data):
    answer, took = trickle(loud_server, data)
    assert answer == b"" and took < 1.5            # closed at 0.3 s, not when the client likes
    assert request(loud_server, "GET", "/api/health")[0] == 200
    err = capfd.readouterr().err
    lines = [x for x in err.splitlines() if "timed out" in x]
    assert len(lines) == 1 and "request not received within 0.3 s of its first byte" in lines[0], err
    assert "Traceback" not in err


def test_an_idle_keep_alive_connection_is_closed_quietly(loud_server, capfd):
    conn = http.client.HTTPConnection(*loud_server.server_address[:2], timeout=10)
    conn.request("GET", "/api/health")
    assert conn.getresponse().read()
    time.sleep(0.6)                                # longer than the server waits for the next
    assert conn.sock.recv(1) == b""                # closed by the server
    conn.close()
    assert [x for x in capfd.readouterr().err.splitlines() if "/api/health" not in x] == []


@pytest.fixture
def two_slot_server(model_paths, monkeypatch):
    monkeypatch.setattr(web, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(web.Handler, "timeout", 0.3)
    with running_server(model_paths, quiet=False) as s:
        yield s


def test_a_crowd_of_slow_clients_holds_every_slot_for_a_deadline_at_most(two_slot_server, capfd):
    with ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(trickle, two_slot_server, b"GET / HTTP/1.1\r\n" * 10) for _ in range(2)]
        time.sleep(0.1)                            # both hold their slot, trickling
        t0 = time.monotonic()
        assert request(two_slot_server, "GET", "/api/health")[0] == 200   # waited, then served
        waited = time.monotonic() - t0
        assert [f.result()[0] for f in slow] == [b"", b""]
    assert 0.1 < waited < 1.5, waited
    assert "Traceback" not in capfd.readouterr().err


def test_connections_beyond_the_bound_are_refused_with_503(two_slot_server, capfd):
    stop = threading.Event()

    def busy():                                    # a keep-alive client that never pauses
        conn = http.client.HTTPConnection(*two_slot_server.server_address[:2], timeout=10)
        while not stop.is_set():
            conn.request("GET", "/api/health")
            conn.getresponse().read()
        conn.close()

    with ThreadPoolExecutor(2) as pool:
        clients = [pool.submit(busy) for _ in range(2)]
        time.sleep(0.2)
        status, body, headers = request(two_slot_server, "GET", "/api/health")
        stop.set()
        [c.result() for c in clients]
    assert status == 503 and body == {"error": "busy: 2 connections open, try again"}
    assert headers["Retry-After"] == "1"
    err = capfd.readouterr().err
    assert len([x for x in err.splitlines() if " 503 busy" in x]) == 1 and "Traceback" not in err
