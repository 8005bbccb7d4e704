"""`nn change-report` on a copy of the committed reports (main) and a changed workspace."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dvcrepo import REPO, copy_repo, git_commit, set_params
from nn.mnist.change import f1_moves
from nn.mnist.params import read_yaml
from nn.mnist.live import live_log, log_epoch


def test_f1_moves_lists_the_largest_moves_first():
    base = pd.DataFrame({"class": ["0", "1", "2"], "f1": [0.9, 0.8, 0.7]})
    head = pd.DataFrame({"class": ["0", "1", "2"], "f1": [0.91, 0.7, 0.7]})
    moves = f1_moves(base, head, top=5)  # class 2 did not move
    assert moves["class"].tolist() == ["1", "0"]
    assert moves["delta"].round(4).tolist() == [-0.1, 0.01]
    assert f1_moves(base, head, top=1)["class"].tolist() == ["1"]
    assert f1_moves(None, head, top=5)["base"].isna().all()


@pytest.fixture
def changed(tmp_path):
    """A repo whose main holds the committed reports; the workspace has mlp.epochs=20 and a
    worse class 3 in the MLP's per-class table."""
    repo = copy_repo(tmp_path, extra=(".gitignore",))
    shutil.copytree(REPO / "reports", repo / "reports", dirs_exist_ok=True)
    for model in ("mlp", "cnn"):  # the train stage's DVCLive record, made as it logs it
        with contextlib.chdir(repo), live_log(Path("reports") / model / "live") as live:
            for record in pd.read_csv(Path("reports") / model / "history.csv").to_dict("records"):
                log_epoch(live, record)
    subprocess.run(["git", "checkout", "-q", "-b", "main"], cwd=repo, check=True)
    git_commit(repo)
    set_params(repo, **{"mlp.epochs": 20})
    table = pd.read_csv(repo / "reports/mlp/per_class.csv")
    table.loc[table["class"] == 3, "f1"] -= 0.05
    table.to_csv(repo / "reports/mlp/per_class.csv", index=False)
    history = pd.read_csv(repo / "reports/mlp/history.csv")
    history.head(20).to_csv(repo / "reports/mlp/history.csv", index=False)
    return repo


def nn(repo, *args):
    return subprocess.run([sys.executable, "-m", "nn.mnist.cli", *args], cwd=repo,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_report_has_the_diffs_the_moves_and_the_pictures(changed):
    proc = nn(changed, "change-report", "--base", "main", "--out", "change-report")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = changed / "change-report"
    md = (out / "README.md").read_text()
    assert "# This change against main" in md
    main_epochs = read_yaml(REPO / "params.yaml")["mlp"]["epochs"]
    assert f"| params.yaml | mlp.epochs | {main_epochs:<6} | 20" in md  # dvc params diff --md
    assert "No metric changed." in md  # the metrics files are main's
    mlp = md[md.index("## mlp"):]
    f1 = pd.read_csv(REPO / "reports/mlp/per_class.csv").set_index("class").loc[3, "f1"]
    assert f"| 3 | {f1:.4f} | {f1 - 0.05:.4f} | -0.0500 |" in mlp and "No class's F1 moved." in md
    for picture in ("mlp-curves.png", "mlp-confusion-main.png", "mlp-confusion-change.png",
                    "cnn-curves.png", "cnn-confusion-main.png", "cnn-confusion-change.png"):
        assert f"]({picture})" in md and (out / picture).stat().st_size > 1000, picture
    assert (out / "plots" / "index.html").is_file()


def test_an_unknown_base_is_one_line(changed):
    proc = nn(changed, "change-report", "--base", "no-such-branch")
    assert proc.returncode == 1
    assert proc.stderr == "error: change-report: unknown git revision 'no-such-branch'\n"


@pytest.mark.slow
def test_a_base_dvc_cannot_read_is_one_line_not_a_column_of_dashes(changed):
    # The remote's URL added to .dvc/config after the base, its endpoint in .dvc/config.local:
    # DVC cannot read the base's config (a remote without a URL) and would print "-" for it.
    with open(changed / ".dvc" / "config", "a") as f:
        f.write("['remote \"storage\"']\n    url = s3://mnist-dvc/cache\n")
    (changed / ".dvc" / "config.local").write_text(
        "['remote \"storage\"']\n    endpointurl = http://127.0.0.1:9\n")
    proc = nn(changed, "change-report", "--base", "main")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: change-report: dvc params diff: failed to load"), proc.stderr
    assert "expected 'url'" in proc.stderr


def listing(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("table, change, message", [
    ("per_class.csv", lambda t: t.drop(columns=["class"]),
     "reports/mlp/per_class.csv: no column 'class' (has: "),
    ("history.csv", lambda t: t.head(0), "reports/mlp/history.csv: no rows, only a header"),
    ("per_class.csv", lambda t: t.assign(f1="high"),
     "reports/mlp/per_class.csv: column 'f1' holds a value that is not a number"),
])
def test_a_malformed_report_table_is_one_line_naming_it_and_nothing_is_written(
        changed, table, change, message):
    path = changed / "reports" / "mlp" / table
    change(pd.read_csv(path)).to_csv(path, index=False)
    out = changed / "change-report"
    out.mkdir()
    (out / "README.md").write_text("the old report\n")
    proc = nn(changed, "change-report", "--base", "main", "--out", "change-report")
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: change-report: {message}")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert listing(out) == {"README.md": b"the old report\n"}


def test_a_binary_table_is_one_line_too(changed):
    (changed / "reports" / "mlp" / "history.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    proc = nn(changed, "change-report", "--base", "main")
    assert proc.returncode == 1 and proc.stderr.startswith(
        "error: change-report: reports/mlp/history.csv: not a CSV table ("), proc.stderr
    assert proc.stderr.count("\n") == 1


def test_out_is_checked_before_any_work(changed):
    (changed / "a-file").write_text("mine\n")
    proc = nn(changed, "change-report", "--out", "a-file")
    assert proc.returncode == 1
    assert proc.stderr == "error: change-report: --out a-file: is a file, not a folder\n"
    (changed / "a-file" ).unlink()
    (changed / "report" / "README.md").mkdir(parents=True)        # cannot be replaced by a file
    proc = nn(changed, "change-report", "--out", "report")
    assert proc.returncode == 1 and proc.stderr == (
        "error: change-report: --out report: report/README.md: is a folder, not a file that can "
        "be replaced\n")
    assert listing(changed / "report") == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_is_one_line(changed):
    (changed / "locked").mkdir()
    (changed / "locked").chmod(0o555)
    proc = nn(changed, "change-report", "--out", "locked/report")
    assert proc.returncode == 1 and proc.stderr == (
        "error: change-report: --out locked/report: locked/report/README.md: the folder locked "
        "is not writable\n")


def test_outside_a_git_repository_is_one_line(tmp_path):
    (tmp_path / "reports" / "mlp").mkdir(parents=True)
    shutil.copy(REPO / "reports/mlp/per_class.csv", tmp_path / "reports/mlp/per_class.csv")
    proc = nn(tmp_path, "change-report")
    assert proc.returncode == 1 and proc.stderr == (
        "error: change-report: not in a git repository: the report compares the workspace with "
        "a git revision\n")
    assert not (tmp_path / "change-report").exists()


@pytest.mark.slow  # two full reports' DVC calls: ~30 s on the shared machine
def test_a_picture_that_cannot_land_leaves_the_old_report_whole(changed):
    """The pictures and the README are made, then all land or none does: a folder where one
    picture goes stops them all, the old README stays beside nothing new."""
    out = changed / "change-report"
    (out / "mlp-curves.png").mkdir(parents=True)
    (out / "README.md").write_text("the old report\n")
    proc = nn(changed, "change-report", "--base", "main")
    assert proc.returncode == 1 and proc.stderr == (
        "error: change-report: --out change-report: cannot write change-report/mlp-curves.png: "
        "is a folder, not a file that can be replaced\n")
    assert listing(out) == {"README.md": b"the old report\n"}
    (out / "mlp-curves.png").rmdir()
    proc = nn(changed, "change-report", "--base", "main")
    assert proc.returncode == 0, proc.stderr
    assert "the old report" not in (out / "README.md").read_text()
    html = (out / "plots" / "index.html").read_text()
    assert "change-report-plots-" not in html     # nothing points into the temporary folder
