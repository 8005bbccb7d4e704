"""`nn pull` and `nn push`: DVC's transfers to and from the default remote, each failure in one line.

DVC's own errors are several lines with a hint to its support page; a reviewer or `make repro`
wants one: which remote, and which of the four known problems (endpoint unreachable, keys
refused, bucket missing, objects missing) it was. The transfer itself is DVC's: fetch into the
cache (downloads land in temporaries and are renamed, so an interrupted one leaves nothing
half-written), then checkout of whatever the cache holds, so one missing object keeps back
only the outputs that need it; `dvc repro` then trains those.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class RemoteError(Exception):
    """A transfer that failed; str() is the one line to print."""


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    endpoint: str | None = None  # endpointurl, for S3-compatible servers; None: the cloud's own

    def __str__(self) -> str:
        return f"remote '{self.name}' ({self.url})"

    def reachable(self, timeout: float = 5.0) -> bool:
        """Whether something listens at the endpoint (checked first: DVC retries for a minute
        before it says that nothing does)."""
        if not self.endpoint:
            return True
        parts = urlsplit(self.endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
        except OSError:
            return False
        return True


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
                  settings.get("endpointurl") or os.environ.get("AWS_ENDPOINT_URL"))


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
    """The default remote, once its endpoint answers; RemoteError (prefixed with `action`)
    when there is none or nothing listens there."""
    remote = default_remote(root)
    if remote is None:
        raise RemoteError("no default remote (dvc remote add -d NAME s3://BUCKET/PATH)")
    if not remote.reachable():
        raise RemoteError(f"{action}: {remote}: cannot reach the endpoint {remote.endpoint}")
    return remote


def pull(root: Path, run_cache: bool = False) -> str:
    """Fetch dvc.lock's outputs (and the run-cache's entries) from the default remote, then check
    out what the cache holds.

    Returns the summary line; raises RemoteError with the one-line reason when anything failed
    (what did arrive is checked out all the same)."""
    remote = reachable_default(root, "pull")
    fetch = dvc(root, "fetch", "-r", remote.name, *(["--run-cache"] if run_cache else []))
    fetched = fetch.stdout + fetch.stderr
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

    entries = [(p.parent.name, p.name) for p in (root / ".dvc" / "cache" / "runs").glob("*/*/*")]
    try:
        with Repo(str(root)) as repo:
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
        raise RemoteError(f"push: {remote}: {problem(proc.stdout + proc.stderr, remote)}")
    pushed = re.search(r"(\d+) files? pushed", proc.stdout)
    count = int(pushed.group(1)) if pushed else 0
    if run_cache:
        count += push_run_outputs(root, remote)
    return f"push: {remote}: {count} file(s) pushed"
