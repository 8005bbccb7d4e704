"""`nn pull` and `nn push`: DVC's transfers to and from the default remote, each failure in one line.

DVC's own errors are several lines with a hint to its support page; a reviewer or `make repro`
wants one: which remote, and which problem it was. The endpoint is checked before DVC runs
(its URL parsed, then one request with deadlines: unreachable, silent, SSL, not S3), then the
known problems of DVC's transfer (keys refused, bucket missing, objects missing) are named. The transfer itself is DVC's: fetch into the
cache (downloads land in temporaries and are renamed, so an interrupted one leaves nothing
half-written), then checkout of whatever the cache holds, so one missing object keeps back
only the outputs that need it; `dvc repro` then trains those.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class RemoteError(Exception):
    """A transfer that failed; str() is the one line to print."""


# Seconds the endpoint has to accept a connection, and then to answer, in the check before DVC
# runs; the remote's own connect_timeout / read_timeout (DVC's S3 options, which DVC's transfers
# use too) take its place where they are set.
DEADLINE = 10.0


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    endpoint: str | None = None  # endpointurl, for S3-compatible servers; None: the cloud's own
    connect_timeout: float | None = None  # the remote's own deadlines, where it sets them
    read_timeout: float | None = None

    def __str__(self) -> str:
        return f"remote '{self.name}' ({self.url})"

    def address(self) -> tuple[str, str, int]:
        """(scheme, host, port) of the endpoint URL, checked: RemoteError naming what is wrong."""
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"{self}: endpoint URL {self.endpoint!r} is not http(s)://HOST[:PORT]")
        try:
            port = parts.port
        except ValueError:  # ':abc', ':99999'
            raise RemoteError(f"{self}: endpoint URL {self.endpoint!r}: the port must be a "
                              f"number from 1 to 65535") from None
        return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)

    def check_endpoint(self) -> str | None:
        """Why the endpoint cannot serve DVC, or None when it answers as S3 does: checked first,
        with a deadline on the connection and one on the answer (DVC would retry for minutes
        against a server that accepts and never answers). The reasons come from the exception
        types: refused or unreachable (OSError), no answer (timeout), SSL (ssl.SSLError), not
        S3 (an HTTP answer with neither S3's headers nor its XML)."""
        import http.client
        import ssl

        if not self.endpoint:
            return None
        scheme, host, port = self.address()
        connect, deadline = self.connect_timeout or DEADLINE, self.read_timeout or DEADLINE
        conn = (http.client.HTTPSConnection(host, port, timeout=connect,
                                            context=ssl.create_default_context())
                if scheme == "https" else http.client.HTTPConnection(host, port, timeout=connect))
        try:
            try:
                conn.connect()
                conn.sock.settimeout(deadline)
            except ssl.SSLError as e:
                return f"SSL error at {self.endpoint}: {e.reason or e} (is it https?)"
            except TimeoutError:
                return f"{self.endpoint} accepts no connection within {connect:g} s"
            except OSError as e:
                return f"cannot reach the endpoint {self.endpoint} ({e.strerror or e})"
            try:
                conn.request("GET", "/")
                answer = conn.getresponse()
                body = answer.read(4096)
            except TimeoutError:
                return f"{self.endpoint} accepted the connection but did not answer within {deadline:g} s"
            except ssl.SSLError as e:
                return f"SSL error at {self.endpoint}: {e.reason or e}"
            except (OSError, http.client.HTTPException) as e:
                return f"{self.endpoint} did not answer as an HTTP server ({type(e).__name__}: {e})"
            if not is_s3_answer(answer.getheaders(), body):
                server = answer.getheader("Server")
                return (f"{self.endpoint} is an HTTP server but not S3 (HTTP {answer.status}"
                        f"{f', {server}' if server else ''}: no S3 header or XML answer)")
            return None
        finally:
            conn.close()


def is_s3_answer(headers: list[tuple[str, str]], body: bytes) -> bool:
    """Whether an answer to GET / is an S3 server's: an x-amz-* header (AWS, MinIO, Ceph,
    SeaweedFS), or S3's XML (a bucket list, or an <Error> with its <Code>)."""
    if any(name.lower().startswith("x-amz-") for name, _ in headers):
        return True
    return b"<ListAllMyBucketsResult" in body or (b"<Error>" in body and b"<Code>" in body)


def default_remote(root: Path) -> Remote | None:
    """The repo's default remote (`dvc remote default`, from any config level), or None."""
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"))  # merges system, global, repo and local
    name = config["core"].get("remote")
    if not name:
        return None
    if name not in config["remote"]:
        raise RemoteError(f"default remote '{name}' is not defined (dvc remote list)")
    settings = config["remote"][name]
    return Remote(name, settings["url"],
                  settings.get("endpointurl") or os.environ.get("AWS_ENDPOINT_URL"),
                  settings.get("connect_timeout"), settings.get("read_timeout"))


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `root` with this Python, its output captured."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)


# (pattern in DVC's output, problem), tried in order; {0}: the endpoint, {bucket}: the bucket.
PROBLEMS = [
    (r"Could not connect to the endpoint URL: \"?(\w+://[^/\"]+)", "cannot reach the endpoint {0}"),
    (r"(?:Unable to locate credentials|NoCredentialsError)", "no keys (set AWS_ACCESS_KEY_ID and "
     "AWS_SECRET_ACCESS_KEY, or dvc remote modify --local)"),
    (r"(?:Forbidden|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|\(403\))",
     "access denied: wrong keys, or keys without rights to this bucket"),
    (r"(?:NoSuchBucket|specified bucket does not exist)", "bucket '{bucket}' does not exist"),
]


def problem(output: str, remote: Remote) -> str:
    """The one-line reason in DVC's output: one of PROBLEMS, else DVC's first ERROR line."""
    for pattern, text in PROBLEMS:
        m = re.search(pattern, output)
        if m:
            bucket = re.sub(r"^\w+://", "", remote.url).split("/")[0]
            return text.format(*m.groups(), bucket=bucket)
    errors = [line.removeprefix("ERROR: ").strip() for line in output.splitlines()
              if line.startswith("ERROR:")]
    return errors[0] if errors else (output.strip().splitlines() or ["dvc failed"])[-1]


def not_in_workspace(root: Path) -> list[str]:
    """Outputs named by dvc.lock that the workspace lacks (`dvc status`: deleted, not in cache)."""
    proc = dvc(root, "status", "--json")
    if proc.returncode != 0:
        return []
    missing = set()
    for changes in json.loads(proc.stdout or "{}").values():
        for change in changes:
            if isinstance(change, dict):
                for path, state in change.get("changed outs", {}).items():
                    if state in ("deleted", "not in cache"):
                        missing.add(path)
    return sorted(missing)


def reachable_default(root: Path, action: str) -> Remote:
    """The default remote, once its endpoint answers as S3 does; RemoteError (prefixed with
    `action`) when there is none, its endpoint URL is malformed, or the endpoint cannot serve."""
    remote = default_remote(root)
    if remote is None:
        raise RemoteError("no default remote (dvc remote add -d NAME s3://BUCKET/PATH)")
    try:
        why = remote.check_endpoint()
    except RemoteError as e:
        raise RemoteError(f"{action}: {e}") from None
    if why:
        raise RemoteError(f"{action}: {remote}: {why}")
    return remote


def gone_away(remote: Remote, action: str) -> None:
    """After a failed transfer: RemoteError if the endpoint no longer answers (the server went
    away during it), the true reason rather than what the transfer made of it."""
    why = remote.check_endpoint()  # its URL passed this check before the transfer
    if why:
        raise RemoteError(f"{action}: {remote}: during the transfer: {why}")


def pull(root: Path, run_cache: bool = False) -> str:
    """Fetch dvc.lock's outputs (and the run-cache's entries) from the default remote, then check
    out what the cache holds.

    Returns the summary line; raises RemoteError with the one-line reason when anything failed
    (what did arrive is checked out all the same)."""
    remote = reachable_default(root, "pull")
    fetch = dvc(root, "fetch", "-r", remote.name, *(["--run-cache"] if run_cache else []))
    fetched = fetch.stdout + fetch.stderr
    if fetch.returncode != 0:
        gone_away(remote, "pull")
    if fetch.returncode != 0 and any(re.search(p, fetched) for p, _ in PROBLEMS):
        raise RemoteError(f"pull: {remote}: {problem(fetched, remote)}")
    checkout = dvc(root, "checkout")  # whatever the cache holds, even after a partial fetch
    if fetch.returncode != 0 or checkout.returncode != 0:
        missing = not_in_workspace(root)
        reason = (f"{len(missing)} output(s) missing on the remote: {', '.join(missing)}" if missing
                  else problem(fetched if fetch.returncode else checkout.stdout + checkout.stderr,
                               remote))
        raise RemoteError(f"pull: {remote}: {reason}")
    count = re.search(r"(\d+) files? fetched", fetch.stdout)
    return f"pull: {remote}: {count.group(1) if count else 0} file(s) fetched, outputs checked out"


def push_run_outputs(root: Path, remote: Remote) -> int:
    """Push the outputs that the local run-cache's entries name; how many objects were sent.

    `dvc push --run-cache` (DVC 3) sends the entries but only the workspace's outputs, so a run
    that is not in the workspace (an earlier experiment, a reverted change) would be found in
    another clone's run-cache without its outputs, and rerun there. This sends them.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            # where DVC keeps the run-cache: under cache.dir, wherever that is configured
            runs = Path(repo.stage_cache.cache_dir)
            entries = [(p.parent.name, p.name) for p in runs.glob("*/*/*")]
            objs = set().union(*repo.stage_cache.get_used_objs(entries).values())
            result = repo.cloud.push(objs, remote=remote.name)
    except DvcException as e:
        raise RemoteError(f"push: {remote}: run-cache outputs: {e}") from None
    if result.failed:
        raise RemoteError(f"push: {remote}: {len(result.failed)} run-cache output(s) not sent")
    return len(result.transferred)


def push(root: Path, run_cache: bool = False) -> str:
    """Push dvc.lock's outputs (and the run-cache: its entries and their outputs) to the default
    remote; the summary line."""
    remote = reachable_default(root, "push")
    proc = dvc(root, "push", "-r", remote.name, *(["--run-cache"] if run_cache else []))
    if proc.returncode != 0:
        gone_away(remote, "push")
        raise RemoteError(f"push: {remote}: {problem(proc.stdout + proc.stderr, remote)}")
    pushed = re.search(r"(\d+) files? pushed", proc.stdout)
    count = int(pushed.group(1)) if pushed else 0
    if run_cache:
        count += push_run_outputs(root, remote)
    return f"push: {remote}: {count} file(s) pushed"
