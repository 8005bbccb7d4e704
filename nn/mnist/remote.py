"""`nn pull` and `nn push`: DVC's transfers to and from the default remote, each failure in one line.

DVC's own errors are several lines with a hint to its support page; a reviewer or `make repro`
wants one: which remote, and which problem it was. The endpoint is checked before DVC runs
(its URL parsed, then one request with deadlines: unreachable, silent, SSL, not S3). The
transfer is DVC's Python API in this process (`dvc.repo.Repo`: fetch, checkout, push), its log
and progress bars kept off the console; a failure is named from the exceptions DVC raises or
logs on its way (botocore's, and S3's error codes: keys missing or refused, bucket missing),
never from DVC's wording. Fetch downloads into the cache (temporaries, then renames, so an
interrupted one leaves nothing half-written), then checkout takes whatever the cache holds, so
one missing object keeps back only the outputs that need it (DVC's CheckoutError names them);
`dvc repro` then trains those.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from dvc.exceptions import CheckoutError
    from dvc.repo import Repo


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

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc

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


# --- DVC in this process -----------------------------------------------------------------------

# The loggers that DVC gives its console handlers when it is imported (dvc/logger.py, setup).
DVC_LOGGERS = ("dvc", "dvc_data", "dvc_objects")


class Logged(logging.Handler):
    """Keeps the exceptions of the records DVC logs while it goes on past a failure (each file
    that failed to transfer, a remote it could not list), for the reason; prints nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextlib.contextmanager
def dvc_repo(root: Path, action: str) -> Iterator[tuple[Repo, list[BaseException]]]:
    """`dvc.repo.Repo(root)`, closed on the way out, and the exceptions DVC logs meanwhile:
    (repo, errors). DVC's log and progress bars are kept off the console while it is open (the
    user reads nn's one line); DVC's loggers and sys.stdout/stderr are as they were afterwards."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    logged = Logged()
    saved = [(log, log.handlers, log.propagate) for log in map(logging.getLogger, DVC_LOGGERS)]
    for log, *_ in saved:
        log.handlers, log.propagate = [logged], False
    try:
        # progress bars, and other libraries' warnings through logging's last resort, go to
        # sys.stderr: a StringIO is no terminal, so DVC draws no bar on it
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                repo = Repo(str(root))
            except DvcException as e:  # not a DVC repo, a config DVC cannot read, a lock held
                raise RemoteError(f"{action}: {first_line(e)}") from None
            with repo:
                yield repo, logged.errors
    finally:
        for log, handlers, propagate in saved:
            log.handlers, log.propagate = handlers, propagate


def transfer_errors() -> tuple[type[BaseException], ...]:
    """What a transfer raises when it fails for a reason outside nn: DVC's errors, the network's
    and the filesystem's (OSError, s3fs's translations of S3's answers among them), botocore's
    where S3 support is installed. Anything else is a bug, nn's one-line unexpected error."""
    from dvc.exceptions import DvcException

    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no dvc-s3: no S3 remote either
        return DvcException, OSError
    return DvcException, OSError, BotoCoreError, ClientError


NO_KEYS = ("no keys (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or dvc remote modify "
           "--local)")
DENIED = "access denied: wrong keys, or keys without rights to this bucket"
# S3's error codes for keys it refuses; a 403 to a HEAD request has no body, so its code is "403"
REFUSED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
                     "403"})


def chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and the exceptions it was raised from or while handling, outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def cause(errors: list[BaseException], remote: Remote) -> str | None:
    """The one-line reason for the first failure of a kind we know in `errors` (and the
    exceptions each was raised from), read from its type and, for S3's answers, from S3's error
    code (s3fs raises PermissionError or FileNotFoundError from botocore's ClientError); None
    when none is."""
    try:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    except ImportError:  # no dvc-s3: no S3 remote, no S3 failure
        return None
    for error in errors:
        for e in chain(error):
            if isinstance(e, NoCredentialsError):
                return NO_KEYS
            if isinstance(e, EndpointConnectionError):  # its URL is the request's: path and all
                url = urlsplit(e.kwargs.get("endpoint_url") or remote.endpoint or "")
                return f"cannot reach the endpoint {url.scheme}://{url.netloc}"
            if isinstance(e, ClientError):
                code = e.response.get("Error", {}).get("Code")
                if code in REFUSED:
                    return DENIED
                if code == "NoSuchBucket":
                    return f"bucket '{remote.bucket}' does not exist"
    return None


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def in_dvc_words(error: BaseException, logged: list[BaseException]) -> str:
    """A failure of no kind we know, as DVC says it: its error's first line (with the type, if
    it is not one of DVC's own), then the first exception DVC logged on the way."""
    from dvc.exceptions import DvcException

    said = first_line(error) if isinstance(error, DvcException) else (
        f"{type(error).__name__}: {first_line(error)}")
    first = next((e for e in logged if e is not error), None)
    return said if first is None else f"{said} ({type(first).__name__}: {first_line(first)})"


def outputs_of(error: CheckoutError, root: Path) -> list[str]:
    """The outputs a CheckoutError names, relative to `root` (DVC's are to the working dir)."""
    return sorted(Path(os.path.relpath(os.path.abspath(t), os.path.abspath(root))).as_posix()
                  for t in error.target_infos)


# --- the commands ------------------------------------------------------------------------------

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
    from dvc.exceptions import CheckoutError, DvcException

    remote = reachable_default(root, "pull")
    failed = None  # DVC's words for a fetch that failed for a reason of no kind we know
    with dvc_repo(root, "pull") as (repo, logged):
        try:
            fetched = repo.fetch(remote=remote.name, run_cache=run_cache)
        except transfer_errors() as e:
            gone_away(remote, "pull")
            known = cause([e, *logged], remote)
            if known:  # nothing came from this remote
                raise RemoteError(f"pull: {remote}: {known}") from None
            fetched, failed = 0, in_dvc_words(e, logged)
        try:
            repo.checkout()  # whatever the cache holds, even after a partial fetch
            missing = []
        except CheckoutError as e:  # the outputs whose objects the cache lacks, the rest out
            missing = outputs_of(e, root)
        except DvcException as e:  # e.g. it would overwrite a file that is not in the cache
            raise RemoteError(f"pull: {remote}: checkout: {first_line(e)}") from None
    if failed:
        raise RemoteError(f"pull: {remote}: {failed}" + (
            f"; {len(missing)} output(s) not fetched: {', '.join(missing)}" if missing else ""))
    if missing:  # the fetch had no error: the remote lacks their objects
        raise RemoteError(f"pull: {remote}: {len(missing)} output(s) missing on the remote: "
                          f"{', '.join(missing)}")
    return f"pull: {remote}: {fetched} file(s) fetched, outputs checked out"


def push_run_outputs(repo: Repo, remote: Remote) -> int:
    """Push the outputs that the local run-cache's entries name; how many objects were sent.

    `dvc push --run-cache` (DVC 3) sends the entries but only the workspace's outputs, so a run
    that is not in the workspace (an earlier experiment, a reverted change) would be found in
    another clone's run-cache without its outputs, and rerun there. This sends them.
    """
    from dvc.exceptions import UploadError

    # where DVC keeps the run-cache: under cache.dir, wherever that is configured
    runs = Path(repo.stage_cache.cache_dir)
    entries = [(p.parent.name, p.name) for p in runs.glob("*/*/*")]
    objs = set().union(*repo.stage_cache.get_used_objs(entries).values())
    result = repo.cloud.push(objs, remote=remote.name)
    if result.failed:
        raise UploadError(len(result.failed))  # each logged, with its exception
    return len(result.transferred)


def push(root: Path, run_cache: bool = False) -> str:
    """Push dvc.lock's outputs (and the run-cache: its entries and their outputs) to the default
    remote; the summary line."""
    remote = reachable_default(root, "push")
    with dvc_repo(root, "push") as (repo, logged):
        try:
            count = repo.push(remote=remote.name, run_cache=run_cache)
            if run_cache:
                count += push_run_outputs(repo, remote)
        except transfer_errors() as e:
            gone_away(remote, "push")
            raise RemoteError(f"push: {remote}: "
                              f"{cause([e, *logged], remote) or in_dvc_words(e, logged)}") from None
    return f"push: {remote}: {count} file(s) pushed"
