"""dvc.yaml declares everything a stage runs: each stage's import closure inside the repo is in
its deps, and the model -> dataset map (`vars: models`) is the one the stages use."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ("nn", "stages")  # the repo's own packages; anything else is an installed library


def resolved_stages() -> dict:
    """name -> (cmd, file deps, params) for every stage, foreach expanded by DVC itself."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        stages = {}
        for stage in repo.index.stages:
            files = [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)]
            params = [k for d in stage.deps if isinstance(d, ParamsDependency) for k in d.params]
            stages[stage.addressing] = (stage.cmd, files, params)
        return stages


STAGES = resolved_stages()


def module_file(module: str) -> Path | None:
    """The repo file of a dotted module (a package is its __init__.py), or None."""
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def packages_of(module: str) -> list[str]:
    """nn.mnist.sources -> [nn, nn.mnist]: the packages Python imports first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(path: Path) -> set[str]:
    """The repo-local modules `path` imports, at any depth of its code (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from nn import engine` imports the module nn.engine when there is one
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in LOCAL and module_file(n)}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(
        ast.parse(path.read_text()))), f"{path}: relative import; this check needs absolute ones"
    return found


def closure(module: str) -> set[Path]:
    """Every repo file that runs when `python -m module` starts: its imports, transitively,
    with the __init__.py of each package on the way."""
    seen, todo, files = set(), [module], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += packages_of(m)
        path = module_file(m)
        assert path is not None, f"no file for module {m}"
        files.add(path.relative_to(ROOT))
        todo += sorted(imports_of(path))
    return files


def covered(file: Path, deps: list[str]) -> bool:
    """A dep covers a file when it is the file or a folder above it."""
    return any(file == Path(d) or Path(d) in file.parents for d in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_file_a_stage_runs_is_a_dep(name):
    cmd, deps, _ = STAGES[name]
    m = re.search(r"python -m (stages\.\w+)", cmd)
    assert m, f"{name}: cmd does not run a stages.* module: {cmd}"
    missing = sorted(str(f) for f in closure(m.group(1)) if not covered(f, deps))
    assert not missing, f"stage {name}: deps lack {', '.join(missing)}"


def test_the_closure_follows_imports_packages_and_lazy_imports():
    files = {str(f) for f in closure("stages.evaluate")}
    assert {"stages/__init__.py", "stages/evaluate.py", "stages/common.py", "nn/__init__.py",
            "nn/mnist/__init__.py", "nn/mnist/modelfile.py", "nn/checkpoint.py", "nn/model.py",
            "nn/mnist/pictures.py"} <= files
    assert "nn/mnist/cli.py" not in files and "nn/train.py" not in files


def test_a_folder_dep_covers_its_files():
    assert covered(Path("nn/fast/conv.py"), ["nn/fast"])
    assert not covered(Path("nn/fastconv.py"), ["nn/fast"])


def models_map() -> dict[str, str]:
    from ruamel.yaml import YAML

    spec = YAML(typ="safe").load(ROOT / "dvc.yaml")
    found = [v["models"] for v in spec.get("vars", []) if isinstance(v, dict) and "models" in v]
    assert len(found) == 1, "dvc.yaml: expected one `models` map under vars"
    return found[0]


def test_the_models_map_drives_train_evaluate_and_report():
    models = models_map()
    assert models, "empty models map"
    per_model = {n.split("@")[1] for n in STAGES if n.startswith(("train@", "evaluate@"))}
    assert per_model == set(models)
    for name, dataset in models.items():
        assert f"--data data/{dataset}" in STAGES[f"train@{name}"][0]
        assert f"--data data/{dataset}" in STAGES[f"evaluate@{name}"][0]
    cmd, deps, params = STAGES["report"]
    assert cmd.endswith(" ".join(f"--{name} {dataset}" for name, dataset in models.items()))
    # DVC cannot loop over a map in deps; these lines are checked against it instead
    for name, dataset in models.items():
        for dep in (f"data/{dataset}", f"reports/{name}/metrics.json",
                    f"reports/{name}/per_class.csv"):
            assert dep in deps, f"report: deps lack {dep}"
        assert name in params, f"report: params lack {name}"


def test_no_dependency_is_an_empty_file():
    """DVC warns "'<file>' is empty" for every stage that lists one, on every run."""
    empty = sorted({f for _, files, _ in STAGES.values() for f in files
                    if (ROOT / f).is_file() and (ROOT / f).stat().st_size == 0})
    assert not empty, f"give these a docstring: {empty}"


def test_stage_commands_find_the_venvs_python_without_activating_it():
    """dvc.yaml's commands say `python`; `.venv/bin/dvc repro` without the venv activated must
    run them with the venv's Python, not fail (or find another one) after DVC has deleted the
    stage's outputs. `make install` writes the .pth file that sees to it."""
    import os
    import site
    import subprocess
    import sys

    pth = Path(site.getsitepackages()[0]) / "mnist_nn_path.pth"
    if not pth.exists():
        pytest.skip("the venv was not made by `make install` (no mnist_nn_path.pth)")
    probe = "import subprocess; print(subprocess.run(['sh', '-c', 'command -v python'], " \
            "capture_output=True, text=True).stdout.strip())"
    found = subprocess.run([sys.executable, "-c", probe], env={"PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found == os.path.join(os.path.dirname(sys.executable), "python")
