"""Watch it learn (nn/mnist/watch.py, GET /api/train, POST /api/train/start|stop): a seeded run in
its own process, on tiny fake MNIST-100 data with a tiny network and budget."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import servefakes
from nn.mnist.watch import Watch
from servefakes import drawing, folder, params, request, running_server  # noqa: F401 -- folder: a fixture


def finished(get, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = get()
        if view["state"] != "running":
            return view
        time.sleep(0.05)
    raise AssertionError(f"still running after {timeout} s")


def test_a_run_streams_its_points_and_the_same_seed_gives_the_same_curve(folder):
    watch = Watch(folder, params(), steps=12, every=4)
    try:
        curves = []
        for _ in range(2):
            watch.start()
            view = finished(watch.view)
            assert view["state"] == "done", view["error"]
            points = view["points"]
            assert [p["step"] for p in points] == [0, 4, 8, 12]
            assert points[0]["loss"] is None and all(p["loss"] > 0 for p in points[1:])
            assert all(0 <= p["dev_acc"] <= 1 and p["kernels"].startswith("data:image/png;base64,") for p in points)
            assert all(len(p["predictions"]) == 8 for p in points) and len(view["test"]) == len(view["labels"]) == 8
            assert view["labels"][0] == f"{int(np.load(folder / 'test.npz')['labels'][0]):02d}"
            curves.append([(p["loss"], p["dev_acc"], p["kernels"], p["predictions"]) for p in points])
            assert watch.view(since=2)["points"] == points[2:]
        assert curves[0] == curves[1]
        other = Watch(folder, params(seed=5), steps=12, every=4)
        other.start()
        assert [p["loss"] for p in finished(other.view)["points"]] != [c[0] for c in curves[0]]
        other.close()
    finally:
        watch.close()


def test_one_run_at_a_time_stop_and_bad_data(folder, tmp_path):
    from nn.mnist.watch import WatchError

    watch = Watch(folder, params(), steps=100_000, every=5)
    try:
        watch.start()
        with pytest.raises(WatchError, match="already running"):
            watch.start()
        deadline = time.monotonic() + 60
        while not watch.view()["points"] and time.monotonic() < deadline:
            time.sleep(0.05)
        watch.stop()
        view = finished(watch.view)
        assert view["state"] == "stopped" and view["points"][-1]["step"] < 100_000
        with pytest.raises(WatchError, match="no training run is running"):
            watch.stop()
    finally:
        watch.close()
    broken = Watch(tmp_path, params(), steps=4, every=2)  # no train.npz there
    broken.start()
    view = finished(broken.view)
    assert view["state"] == "failed" and "train.npz" in view["error"]
    broken.close()


@pytest.fixture
def server(tmp_path, folder):
    paths = servefakes.untrained_models(tmp_path)
    with running_server(paths) as s:
        s.watch = Watch(folder, params(), steps=100_000, every=2)
        s.paths = paths
        yield s
    assert s.watch._process is None or not s.watch._process.is_alive()  # it stops with the server


def test_the_api_one_run_at_a_time_and_predictions_never_wait(server):
    files = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in server.paths.items()}
    status, view, _ = request(server, "GET", "/api/train")
    assert status == 200 and view["state"] == "idle" and view["points"] == []
    status, view, _ = request(server, "POST", "/api/train/start")
    assert status == 200 and view["state"] == "running"
    status, answer, _ = request(server, "POST", "/api/train/start")
    assert status == 409 and answer == {"error": "a training run is already running (one at a time): stop it first"}
    deadline = time.monotonic() + 60
    while len(request(server, "GET", "/api/train")[1]["points"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    image = drawing("71")
    for _ in range(5):  # while it trains
        t0 = time.perf_counter()
        assert request(server, "POST", "/api/predict?model=cnn", image, {"Content-Type": "image/png"})[0] == 200
        assert time.perf_counter() - t0 < 2
    view = request(server, "GET", "/api/train?since=1")[1]
    assert view["state"] == "running" and view["points"][0]["step"] == 2 and view["next"] >= 3
    assert request(server, "POST", "/api/train/stop")[0] == 200
    assert request(server, "GET", "/api/train?since=x")[:2] == (
        400, {"error": "since must be an integer from 0 to 1000000000, not 'x'"})
    assert request(server, "GET", "/api/train/start")[0] == 405
    assert finished(lambda: request(server, "GET", "/api/train")[1])["state"] == "stopped"
    assert request(server, "POST", "/api/train/stop")[:2] == (409, {"error": "no training run is running"})
    assert {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in server.paths.items()} == files
    request(server, "POST", "/api/train/start")  # still running when the server stops: it stops too


def test_the_training_view_is_off_without_data(tmp_path):
    with running_server(servefakes.untrained_models(tmp_path)) as s:
        status, answer, _ = request(s, "POST", "/api/train/start")
        assert status == 404 and answer["error"].startswith("the training view is off")
        assert request(s, "GET", "/api/health")[0] == 200


def test_nn_serve_trains_in_the_view_and_stops_with_ctrl_c(tmp_path, folder):
    paths = servefakes.untrained_models(tmp_path)
    (tmp_path / "params.yaml").write_text("cnn:\n" + "".join(
        f"  {k}: {json.dumps(v)}\n" for k, v in params().model_dump().items()))
    exe = Path(sys.executable).parent / "nn"
    proc = subprocess.Popen([str(exe), "serve", "--port", "0", "--mlp", paths["mlp"], "--cnn", paths["cnn"],
                             "--watch-data", folder, "--watch-steps", "100000", "--params", tmp_path / "params.yaml",
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        m = re.fullmatch(r"nn serve: http://[\d.]+:(\d+)/  \(Ctrl-C to stop\)\n", proc.stdout.readline())
        conn = http.client.HTTPConnection("127.0.0.1", int(m[1]), timeout=10)
        conn.request("POST", "/api/train/start")
        r = conn.getresponse()
        assert r.status == 200 and json.load(r)["steps"] == 100_000
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn.request("GET", "/api/train")
            if json.load(conn.getresponse())["points"]:
                break
            time.sleep(0.1)
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)  # mid-run: the run stops with the server
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err

    # without the data: it serves, and says in one line that the view is off
    proc = subprocess.Popen([str(exe), "serve", "--port", "0", "--mlp", paths["mlp"], "--cnn", paths["cnn"],
                             "--watch-data", tmp_path / "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        m = re.fullmatch(r"nn serve: http://[\d.]+:(\d+)/  \(Ctrl-C to stop\)\n", proc.stdout.readline())
        conn = http.client.HTTPConnection("127.0.0.1", int(m[1]), timeout=10)
        conn.request("POST", "/api/train/start")
        assert conn.getresponse().status == 404  # serving, with the view off
        conn.close()
        assert proc.stderr.readline() == f"nn serve: the training view is off: no {tmp_path / 'none' / 'train.npz'}\n"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
