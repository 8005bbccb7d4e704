"""The imports go one way, core below application below pipeline: no core module of nn/
imports nn.mnist, and no module of nn/ imports the pipeline's scripts (stages/)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NN = ROOT / "nn"
APP = NN / "mnist"
CORE = sorted(p for p in NN.rglob("*.py") if APP not in p.parents)
EVERY = sorted(NN.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for each import in the file, relative imports resolved against `package`
    (by default the file's own), `from nn import mnist` counted as the module nn.mnist."""
    if package is None:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if is_app(node.value) or is_pipeline(node.value):
                found.append((node.lineno, node.value))  # importlib.import_module("nn.mnist...")
    return found


def is_app(module: str) -> bool:
    return module == "nn.mnist" or module.startswith("nn.mnist.")


def is_pipeline(module: str) -> bool:
    return module == "stages" or module.startswith("stages.")


def test_the_core_is_found():
    names = {p.relative_to(NN).as_posix() for p in CORE}
    assert {"__init__.py", "model.py", "checkpoint.py", "train.py", "engine.py"} <= names
    assert not any(n.startswith("mnist/") for n in names)


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_core_module_imports_the_application(path):
    bad = [f"{path.relative_to(ROOT)}:{line} imports {m}"
           for line, m in imported_modules(path) if is_app(m)]
    assert not bad, "; ".join(bad)


def test_the_checker_sees_every_spelling(tmp_path):
    for code in ["import nn.mnist.cli", "from nn import mnist", "from nn.mnist.modelfile import load",
                 "from . import mnist", "from .mnist import sources",
                 "importlib.import_module('nn.mnist.sources')"]:
        path = tmp_path / "m.py"
        path.write_text(code + "\n")
        assert any(is_app(m) for _, m in imported_modules(path, package="nn")), code
    path.write_text("import numpy as np\nfrom nn.model import Sequential\nfrom . import losses\n")
    assert not any(is_app(m) for _, m in imported_modules(path, package="nn"))


def test_every_module_of_nn_is_found():
    names = {p.relative_to(NN).as_posix() for p in EVERY}
    assert {"model.py", "mnist/cli.py", "mnist/tune/study.py", "mnist/training.py"} <= names


@pytest.mark.parametrize("path", EVERY, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_of_nn_imports_the_pipeline(path):
    bad = [f"{path.relative_to(ROOT)}:{line} imports {m}"
           for line, m in imported_modules(path) if is_pipeline(m)]
    assert not bad, "; ".join(bad)


def test_the_checker_sees_every_spelling_of_the_pipeline(tmp_path):
    path = tmp_path / "m.py"
    for code in ["import stages.common", "from stages import train", "import stages",
                 "from stages.common import ParamsError", "def f():\n    from stages import train",
                 "importlib.import_module('stages.train')"]:
        path.write_text(code + "\n")
        assert any(is_pipeline(m) for _, m in imported_modules(path, package="nn.mnist")), code
    path.write_text("from nn.mnist.params import load_params\nSTAGE = 'train'\n")
    assert not any(is_pipeline(m) for _, m in imported_modules(path, package="nn.mnist"))


def test_nn_init_does_not_import_the_application():
    assert not any(is_app(m) for _, m in imported_modules(NN / "__init__.py"))


def test_importing_every_core_module_leaves_the_application_unloaded():
    modules = [module_name(p) for p in CORE]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "loaded = sorted(m for m in sys.modules if m == 'nn.mnist' or m.startswith('nn.mnist.'))\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_importing_every_module_of_nn_leaves_the_pipeline_unloaded():
    modules = [module_name(p) for p in EVERY]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "loaded = sorted(m for m in sys.modules if m == 'stages' or m.startswith('stages.'))\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# A test module imports helpers (conftest, layertable, dvcrepo, datafakes, servefakes,
# tunefakes), never another test module: running or changing one file does not drag in another's
# tests.
@pytest.mark.parametrize("path", sorted((ROOT / "tests").glob("test_*.py")), ids=lambda p: p.stem)
def test_no_test_module_imports_another(path):
    imported = {name.split(".")[0] for _, name in imported_modules(path, package="")}
    others = {m for m in imported if m.startswith("test_")}
    assert not others, f"{path.name} imports {sorted(others)}: move what it needs to a helper module"
