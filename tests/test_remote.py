"""DVC's S3 remote against a real server (SeaweedFS): a pipeline pushed from one clone is pulled,
not retrained, in another; the run-cache and experiments travel; each bad input is one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from dvcrepo import (TINY_MODELS, copy_repo, dvc, env_with_venv, fake_download,
                     git_commit, set_params)
from s3server import free_ports

pytestmark = pytest.mark.slow

BUCKET = "mnist-dvc"
URL = f"s3://{BUCKET}/cache"
SMALL_DATA = {"prepare.dev_size": 50, "mnist100.train_size": 400, "mnist100.dev_size": 100,
              "mnist100.test_size": 100, "mnist100.sample_grid": 4}
STAGES = ("download", "prepare", "synthesize", "train@mlp", "train@cnn", "evaluate@mlp",
          "evaluate@cnn", "report")


def run(repo: Path, *cmd: str, ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo, env=env or env_with_venv(), capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def nn(repo: Path, *args: str, ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "nn.mnist.cli", *args, ok=ok, env=env)


def make(repo: Path, target: str) -> str:
    """`make TARGET` with the test's Python standing in for the clone's .venv."""
    proc = run(repo, "make", "-o", ".venv/.installed", target)
    return proc.stdout + proc.stderr


def with_keys(repo: Path, s3, remote: str = "storage", **overrides: str) -> None:
    """The endpoint and keys of `remote` in .dvc/config.local, never in the committed config."""
    settings = {"endpointurl": s3.endpoint, "access_key_id": s3.access_key,
                "secret_access_key": s3.secret_key, **overrides}
    for key, value in settings.items():
        dvc(repo, "remote", "modify", "--local", remote, key, value)


def ran(out: str) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in out}


def md5_of(repo: Path, path: str) -> str:
    lock = YAML(typ="safe").load(repo / "dvc.lock")
    return next(o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])
                if o["path"] == path)


@pytest.fixture(scope="module")
def origin(s3, tmp_path_factory):
    """A clone that ran the tiny pipeline, pushed it and its run-cache (to `storage`, and to
    `spare` for the test that deletes an object), then ran and pushed an experiment.
    Its git remote `origin` is a bare repo that the other clones clone."""
    s3.client().create_bucket(Bucket=BUCKET)
    bare = tmp_path_factory.mktemp("bare") / "repo.git"
    run(bare.parent, "git", "init", "-q", "--bare", "-b", "main", str(bare))
    repo = copy_repo(tmp_path_factory.mktemp("origin"), extra=("Makefile", ".gitignore"))
    run(repo, "git", "checkout", "-q", "-b", "main")
    set_params(repo, **fake_download(tmp_path_factory, n_train=300, n_test=120), **SMALL_DATA,
               **TINY_MODELS)
    dvc(repo, "remote", "add", "-d", "storage", URL)  # the bucket URL is committed; no endpoint
    dvc(repo, "repro")
    git_commit(repo)
    with_keys(repo, s3)
    assert "endpointurl" not in (repo / ".dvc" / "config").read_text()
    run(repo, "git", "remote", "add", "origin", str(bare))
    run(repo, "git", "push", "-q", "origin", "main")
    make(repo, "push")  # nn push --run-cache
    dvc(repo, "remote", "add", "--local", "spare", f"s3://{BUCKET}/spare")
    with_keys(repo, s3, "spare")
    dvc(repo, "push", "-r", "spare")
    set_params(repo, **{"prepare.dev_size": 60})  # a run only the run-cache keeps
    dvc(repo, "repro", "prepare")
    run(repo, "git", "checkout", "--", "params.yaml", "dvc.lock")
    dvc(repo, "checkout")
    dvc(repo, "exp", "run", "-n", "more-epochs", "-S", "mlp.epochs=2")
    dvc(repo, "exp", "push", "origin", "more-epochs")
    nn(repo, "push", "--run-cache")
    return repo, bare


def fresh_clone(origin, s3, tmp_path: Path, keys: bool = True) -> Path:
    _, bare = origin
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(bare), str(clone))
    if keys:
        with_keys(clone, s3)
    return clone


def test_a_fresh_clone_pulls_the_committed_outputs_and_trains_nothing(origin, s3, tmp_path):
    clone = fresh_clone(origin, s3, tmp_path)
    out = make(clone, "repro")
    assert f"pull: remote 'storage' ({URL}):" in out and "file(s) fetched" in out
    assert ran(out) == set(), out
    assert "Data and pipelines are up to date." in dvc(clone, "status")
    assert run(clone, "git", "status", "--porcelain").stdout == ""
    main = run(clone, "git", "show", "main:dvc.lock").stdout
    for model in ("mlp", "cnn"):
        assert md5_of(clone, f"models/{model}.npz") in main


def test_one_changed_param_reruns_only_the_stages_that_read_it(origin, s3, tmp_path):
    clone = fresh_clone(origin, s3, tmp_path)
    proc = nn(clone, "pull")
    assert proc.stdout.startswith(f"pull: remote 'storage' ({URL}): ") and proc.stderr == "", (
        proc.stdout + proc.stderr)  # one line: DVC's own log and progress bars kept off
    assert proc.stdout.count("\n") == 1 and "file(s) fetched, outputs checked out" in proc.stdout
    set_params(clone, **{"cnn.epochs": 2})
    assert ran(dvc(clone, "repro")) == {"train@cnn", "evaluate@cnn", "report"}


def test_the_run_cache_restores_a_run_made_in_another_clone(origin, s3, tmp_path):
    clone = fresh_clone(origin, s3, tmp_path)
    nn(clone, "pull", "--run-cache")
    set_params(clone, **{"prepare.dev_size": 60})  # origin ran it, then went back to 50
    out = dvc(clone, "repro", "--pull", "prepare")  # --pull: the cached run's outputs too
    assert "Stage 'prepare' is cached - skipping run, checking out outputs" in out
    assert ran(out) == set(), out


def test_a_train_run_made_in_another_clone_is_restored_not_rerun(origin, s3, tmp_path):
    # DVC 3 keeps no run-cache entry for a stage with a `cache: false` output that is not a
    # metric or a plot (dvc/stage/__init__.py, Stage.run): dvc.yaml declares history.csv and
    # the evaluate stage's pictures and tables as plots so that train@ and evaluate@ keep theirs.
    # origin ran mlp.epochs=2 as an experiment and pushed its run-cache: here it is restored.
    clone = fresh_clone(origin, s3, tmp_path)
    nn(clone, "pull", "--run-cache")
    set_params(clone, **{"mlp.epochs": 2})
    out = dvc(clone, "repro", "--pull")
    assert "Stage 'train@mlp' is cached - skipping run, checking out outputs" in out, out
    assert ran(out) == {"report"}, out     # reports/README.md is a plain cache: false out


def test_an_experiment_pushed_from_one_clone_is_applied_in_another_without_training(
        origin, s3, tmp_path):
    clone = fresh_clone(origin, s3, tmp_path)
    dvc(clone, "exp", "pull", "origin", "more-epochs")
    shown = dvc(clone, "exp", "show", "--md", "--all-commits")
    row = next(line for line in shown.splitlines() if "more-epochs" in line)
    repo, _ = origin
    accuracy = json.loads((repo / "reports/mlp/metrics.json").read_text())["accuracy"]
    # `dvc exp show` rounds to 5 significant digits
    assert "reports/mlp/metrics.json:accuracy" in shown and f"{accuracy:.5g}" in row, shown
    out = dvc(clone, "exp", "apply", "more-epochs")
    assert ran(out) == set()
    for path in ("models/mlp.npz", "reports/mlp/metrics.json"):
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path
    assert "Data and pipelines are up to date." in dvc(clone, "status")


def _one_line_error(proc: subprocess.CompletedProcess, remote: str, url: str, problem: str,
                    action: str = "pull") -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: {action}: remote '{remote}' ({url}): "), proc.stderr
    assert problem in proc.stderr, proc.stderr
    assert proc.stdout == "", proc.stdout  # none of DVC's own log or progress


# Each failure through the real `nn pull` / `nn push` against the real server: the reason is
# read from the exception DVC raises or logs (botocore's NoCredentialsError; S3's error codes
# SignatureDoesNotMatch, InvalidAccessKeyId, 403 and NoSuchBucket in botocore's ClientError),
# an unreachable endpoint from the check before DVC runs.
@pytest.mark.parametrize("case, problem", [
    ("unreachable", "cannot reach the endpoint http://127.0.0.1:"),
    ("wrong keys", "access denied: wrong keys"),
    ("unknown key id", "access denied: wrong keys"),
    ("no keys", "no keys (set AWS_ACCESS_KEY_ID"),
    ("missing bucket", "bucket 'no-such-bucket' does not exist"),
])
@pytest.mark.parametrize("action", ["pull", "push"])
def test_a_bad_remote_is_one_line_and_writes_nothing(origin, s3, tmp_path, case, problem, action):
    clone = fresh_clone(origin, s3, tmp_path, keys=case != "no keys")
    url = URL
    if case == "unreachable":
        with_keys(clone, s3, endpointurl=f"http://127.0.0.1:{free_ports(1)[0]}")
    elif case == "wrong keys":
        with_keys(clone, s3, secret_access_key="not-the-secret")
    elif case == "unknown key id":
        with_keys(clone, s3, access_key_id="no-such-key-id")
    elif case == "no keys":
        dvc(clone, "remote", "modify", "--local", "storage", "endpointurl", s3.endpoint)
    else:
        url = "s3://no-such-bucket/cache"
        dvc(clone, "remote", "modify", "--local", "storage", "url", url)
    env = env_with_venv()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(name, None)
    _one_line_error(nn(clone, action, ok=False, env=env), "storage", url, problem, action)
    assert run(clone, "git", "status", "--porcelain").stdout == ""
    assert not (clone / "data").exists() and not (clone / "models").exists()
    assert "no-such-bucket" not in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}
    if case == "unreachable" and action == "pull":  # and `make repro` trains it all, saying so
        out = make(clone, "repro")
        assert "repro: dvc repro trains what could not be pulled" in out
        # every stage with a cached output; the rest find their git-tracked reports unchanged
        assert ran(out) == {"download", "prepare", "synthesize", "train@mlp", "train@cnn"}, out
        assert run(clone, "git", "status", "--porcelain").stdout == ""


def test_a_remote_missing_an_object_gives_the_rest_and_make_repro_trains_that_one(
        origin, s3, tmp_path):
    clone = fresh_clone(origin, s3, tmp_path, keys=False)
    dvc(clone, "remote", "add", "--local", "-d", "spare", f"s3://{BUCKET}/spare")
    with_keys(clone, s3, "spare")
    md5 = md5_of(clone, "models/cnn.npz")
    s3.client().delete_object(Bucket=BUCKET, Key=f"spare/files/md5/{md5[:2]}/{md5[2:]}")

    proc = nn(clone, "pull", ok=False)
    _one_line_error(proc, "spare", f"s3://{BUCKET}/spare",
                    "1 output(s) missing on the remote: models/cnn.npz")
    # Nothing half-written: every output there is whole (dvc status names only the missing one).
    status = dvc(clone, "status")
    assert "models/cnn.npz" in status and "modified" not in status, status
    assert (clone / "models" / "mlp.npz").is_file() and not (clone / "models" / "cnn.npz").exists()

    out = make(clone, "repro")
    assert "repro: dvc repro trains what could not be pulled" in out
    assert ran(out) == {"train@cnn"}, out  # the same machine retrains the same bytes
    assert run(clone, "git", "status", "--porcelain").stdout == ""


def test_without_a_remote_make_repro_is_dvc_repro_alone(tmp_path):
    repo = copy_repo(tmp_path, extra=("Makefile",))
    (repo / "dvc.yaml").write_text("stages:\n  one:\n    cmd: echo made > out.txt\n    outs: [out.txt]\n")
    out = make(repo, "repro")
    assert "Running stage 'one'" in out and "pull" not in out, out
    proc = nn(repo, "pull", ok=False)
    assert proc.returncode == 1 and proc.stderr == (
        "error: no default remote (dvc remote add -d NAME s3://BUCKET/PATH)\n"), proc.stderr
