"""Time `nn serve`: start to ready, and POST /api/predict latency for a drawn two-digit number.

    .venv/bin/python benchmarks/bench_serve.py [--mlp models/mlp.npz] [--cnn models/cnn.npz] [--requests 200]

Starts `nn serve --port 0` as the user would, times it from the process start to the first
answer of GET /api/health (median of --starts), then sends --requests POSTs of the same drawn
"71" (a 560x280 PNG, as the page's wide canvas sends it) on one keep-alive connection, after 10
for warm-up. Prints p50, p95 and max in milliseconds, client side.
"""

import argparse
import http.client
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servefakes import drawing  # noqa: E402 -- the same drawing the tests send


def start(exe: Path, mlp: str, cnn: str) -> tuple[subprocess.Popen, int, float]:
    """Start nn serve; -> (process, port, seconds until it answered /api/health)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), "serve", "--port", "0", "--quiet", "--mlp", mlp, "--cnn", cnn],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        proc.kill()
        sys.exit(f"nn serve did not start: {line!r}")
    port = int(m[1])
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/api/health")
    assert conn.getresponse().status == 200
    conn.close()
    return proc, port, time.perf_counter() - t0


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mlp", default="models/mlp.npz")
    ap.add_argument("--cnn", default="models/cnn.npz")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--starts", type=int, default=5)
    args = ap.parse_args()
    exe = Path(sys.executable).parent / "nn"

    ready = []
    for _ in range(args.starts):
        proc, port, seconds = start(exe, args.mlp, args.cnn)
        ready.append(seconds)
        stop(proc)

    proc, port, _ = start(exe, args.mlp, args.cnn)
    image = drawing("71", width=560)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    label = None
    try:
        for i in range(10 + args.requests):
            t0 = time.perf_counter()
            conn.request("POST", "/api/predict?model=cnn&top_k=5", image, {"Content-Type": "image/png"})
            r = conn.getresponse()
            body = r.read()
            if i >= 10:
                times.append((time.perf_counter() - t0) * 1e3)
            assert r.status == 200, body
            label = re.search(rb'"label": "(\d+)"', body)[1].decode()
    finally:
        conn.close()
        stop(proc)
    q = statistics.quantiles(times, n=100)
    print(f"start to ready: median {statistics.median(ready):.2f} s of {args.starts} (target <= 2 s)")
    print(f"POST /api/predict, drawn '71' ({len(image):,} bytes PNG, 560x280, read as {label}), "
          f"{args.requests} requests: p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms (target <= 50), max {max(times):.1f} ms")


if __name__ == "__main__":
    main()
