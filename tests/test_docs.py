"""The guide in docs/ is tested like code, so that a rename or a change in the code breaks a test.

Conventions of the pages (docs/README.md explains them to writers):
  - a ```python block is run, page by page in one namespace from the repository root: as a
    doctest when it holds `>>>` (the outputs are compared), else executed;
  - `<!-- excerpt: PATH::QUALNAME -->` (or `PATH` alone) on the line before a fenced block says
    the block is quoted from that file: its lines must appear there verbatim and in order
    (indentation aside), inside the named function or class; it is not run. A ```text excerpt
    is quoted prose: its words must appear in that order, wherever the file breaks its lines;
  - every `PATH` and `PATH::QUALNAME` in backticks and every relative link must exist;
    `pytest tests/FILE.py::TEST` commands must name real tests;
  - `<!-- generated: NAME -->` ... `<!-- /generated -->` blocks (model summaries, the DAG from
    `dvc dag`) and the figures are recomputed by docs/make_docs.py and compared.
"""

import ast
import doctest
import functools
import re
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]  # the front door is checked as a page

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(excerpt|generated):\s*(\S+)\s*-->\s*$")
CODE_REF = re.compile(r"`((?:nn|stages|tests|docs|benchmarks)/[\w/.-]+\.py)(?:::([\w.]+))?`")
FILE_REF = re.compile(r"`((?:nn|stages|tests|docs|benchmarks|reports)/[\w/.-]+\.\w+|"
                      r"(?:dvc|params)\.yaml|Makefile)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PYTEST = re.compile(r"pytest[^\n`]*?\b(tests/[\w/]+\.py)((?:::[\w\[\]-]+)*)")


def blocks(text: str):
    """(language, body, marker or None, line number) of every fenced block of a page."""
    for m in FENCE.finditer(text):
        start = text.count("\n", 0, m.start())
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        yield m.group(1), m.group(2), marker.groups() if marker else None, start + 1


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# ---------------------------------------------------------------------------------- checkers

def qualname_node(path: Path, qualname: str):
    """The AST node of `Class.method` / `function` in a Python file, or None."""
    scope = ast.parse(path.read_text()).body
    node = None
    for part in qualname.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                     and n.name == part), None)
        if node is None:
            # module-level constants (ast.Assign) count as names too
            node = next((n for n in scope if isinstance(n, ast.Assign)
                         and any(isinstance(t, ast.Name) and t.id == part for t in n.targets)), None)
            if node is None:
                return None
        scope = getattr(node, "body", [])
    return node


def contains_lines(haystack: str, needle: str) -> bool:
    """Whether the lines of `needle` appear consecutively in `haystack`, up to common indentation."""
    want = textwrap.dedent(needle).strip("\n").splitlines()
    have = haystack.splitlines()
    for i in range(len(have) - len(want) + 1):
        window = "\n".join(have[i:i + len(want)])
        if textwrap.dedent(window).splitlines() == want:
            return True
    return False


def excerpt_errors(root: Path, page: Path) -> list[str]:
    errors = []
    for lang, body, marker, line in blocks(page.read_text()):
        if not marker or marker[0] != "excerpt":
            continue
        path, _, qualname = marker[1].partition("::")
        where = f"{page.name}:{line} excerpt of {marker[1]}"
        src_path = root / path
        if not src_path.is_file():
            errors.append(f"{where}: no file {path}")
            continue
        source = src_path.read_text()
        if qualname:
            node = qualname_node(src_path, qualname)
            if node is None:
                errors.append(f"{where}: {path} has no {qualname}")
                continue
            source = "\n".join(source.splitlines()[node.lineno - 1 - len(getattr(node, "decorator_list", [])):
                                                   node.end_lineno])
        if lang == "text":  # quoted prose: the same words in order, wherever the lines break
            found = " ".join(body.split()) in " ".join(source.split())
        else:
            found = contains_lines(source, body)
        if not found:
            errors.append(f"{where}: the quoted lines are not (or no longer) in the code")
    return errors


@functools.cache
def pending_outputs(root: Path) -> frozenset[str]:
    """Outputs dvc.yaml declares that dvc.lock does not record yet: a new output of a stage,
    there after the next `dvc repro` (then the reference check holds them as any other)."""
    from dvc.repo import Repo
    from ruamel.yaml import YAML

    with Repo(str(root)) as repo:
        declared = {out.def_path for stage in repo.index.stages for out in stage.outs}
    lock = YAML(typ="safe").load(root / "dvc.lock") or {}
    recorded = {out["path"] for stage in (lock.get("stages") or {}).values()
                for out in stage.get("outs") or []}
    return frozenset(declared - recorded)


def reference_errors(root: Path, page: Path) -> list[str]:
    errors = []
    text = page.read_text()
    for m in CODE_REF.finditer(text):
        path, qualname = m.group(1), m.group(2)
        if not (root / path).is_file():
            errors.append(f"{page.name}: `{m.group(0)}`: no file {path}")
        elif qualname and qualname_node(root / path, qualname) is None:
            errors.append(f"{page.name}: `{m.group(0)}`: {path} has no {qualname}")
    for m in FILE_REF.finditer(text):
        if not (root / m.group(1)).exists() and not m.group(1).startswith(("data/", "models/")) \
                and m.group(1) not in pending_outputs(root):
            errors.append(f"{page.name}: `{m.group(1)}` does not exist")
    for m in LINK.finditer(text):
        target = m.group(1)
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = (page.parent / target).resolve()
        in_repo = root / resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved
        if not in_repo.exists():
            errors.append(f"{page.name}: link ({target}) leads nowhere")
    for m in PYTEST.finditer(text):
        path, node = m.group(1), m.group(2)
        if not (root / path).is_file():
            errors.append(f"{page.name}: `pytest {path}`: no such test file")
            continue
        parts = [p.split("[")[0] for p in node.split("::") if p]
        if parts and qualname_node(root / path, ".".join(parts)) is None:
            errors.append(f"{page.name}: `pytest {path}{node}`: no such test")
    return errors


# ---------------------------------------------------------------------------------- the tests

def test_the_guide_exists_and_the_readme_links_it():
    assert len(PAGES) >= 10
    assert "(docs/README.md)" in (ROOT / "README.md").read_text()
    index = (DOCS / "README.md").read_text()
    for page in PAGES:
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_run(page, monkeypatch):
    """Every python block not quoted from a file runs; doctest blocks print what the page says."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))  # a page may add docs/ to it, as a reader would
    globs = {"__name__": f"docs.{page.stem}"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for lang, body, marker, line in blocks(page.read_text()):
        if lang != "python" or marker:
            continue
        if ">>>" in body:
            test = parser.get_doctest(body, globs, f"{page.name}:{line}", str(page), line)
            out = []
            result = runner.run(test, out=out.append, clear_globs=False)
            assert result.failed == 0, "".join(out)
            globs.update(test.globs)  # get_doctest copied them: the next block sees these names
        else:
            exec(compile(body, f"{page.name}:{line}", "exec"), globs)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_excerpts_are_verbatim_in_the_code(page):
    assert excerpt_errors(ROOT, page) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_references_exist(page):
    assert reference_errors(ROOT, page) == []


def test_generated_blocks_and_figures_are_current():
    """Model summaries, the DAG, the stage table, the schedule and the figures, recomputed."""
    sys.path.insert(0, str(DOCS))
    try:
        import make_docs
    finally:
        sys.path.remove(str(DOCS))
    assert make_docs.stale() == [], "run `python docs/make_docs.py` and review the diff"
    names = {p.name for p in (DOCS / "figures").glob("*.png")}
    assert names == set(make_docs.FIGURES_DRAWN) | {"digit.png"}, "a figure no script draws"
    used = "".join(p.read_text() for p in PAGES)
    for name in names:
        assert f"figures/{name}" in used, f"docs/figures/{name} is on no page"
    digit = np.asarray(Image.open(DOCS / "figures" / "digit.png"))
    assert digit.shape == (28, 28) and digit.dtype == np.uint8


def test_every_generated_block_has_a_known_name():
    sys.path.insert(0, str(DOCS))
    try:
        import make_docs
    finally:
        sys.path.remove(str(DOCS))
    found = {m.group(2) for p in PAGES for m in make_docs.BLOCK.finditer(p.read_text())}
    assert found == set(make_docs.TEXTS)


def test_a_rename_in_the_code_breaks_the_guide(tmp_path):
    """The checkers themselves: rename a method the guide quotes, change a quoted line."""
    for part in ("nn", "tests", "docs", "stages", "benchmarks", "reports"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", "Makefile", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    page = DOCS / "03-conv2d.md"
    assert excerpt_errors(tmp_path, page) == [] and reference_errors(tmp_path, page) == []
    layers = tmp_path / "nn" / "layers.py"
    source = layers.read_text()
    layers.write_text(source.replace("def col2im(", "def col_to_im(").replace(
        "self.grads[\"W\"] = (cols.T @ dout2)", "self.grads[\"W\"] = (dout2.T @ cols).T"))
    errors = excerpt_errors(tmp_path, page) + reference_errors(tmp_path, page)
    assert any("has no col2im" in e for e in errors), errors
    assert any("Conv2d.backward: the quoted lines" in e for e in errors), errors


def test_the_readme_is_short_and_links_every_task_page():
    """The front door says what to read, then stops: the history lives in docs/results.md."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in ("results", "params", "library", "predict", "serve", "tuning", "speed", "gpu"):
        assert f"(docs/{page}.md)" in readme, f"README.md does not link docs/{page}.md"


def course_order() -> tuple[list[str], list[str]]:
    """The course's pages and the engineering section's, in the order docs/README.md lists them."""
    index = (DOCS / "README.md").read_text()
    course, _, rest = index.partition("**The engineering**")
    pages = lambda text: re.findall(r"^\| \[\d\d · [^]]+\]\((\d\d-[\w-]+\.md)\)", text, re.M)
    return pages(course), pages(rest.partition("Using the project")[0])


def test_the_course_runs_00_to_08_then_12_with_previous_and_next_on_every_page():
    course, engineering = course_order()
    assert [p[:2] for p in course] == ["00", "01", "02", "03", "04", "05", "06", "07", "08", "12", "13"]
    assert [p[:2] for p in engineering] == ["09", "10", "11"]
    numbered = sorted(p.name for p in DOCS.glob("[0-9][0-9]-*.md"))
    assert sorted(course + engineering) == numbered, "a numbered page in neither section"
    for path in (course, engineering):
        for i, name in enumerate(path):
            nav = (DOCS / name).read_text().split("\n")[2]  # the line under the title
            assert nav.startswith("[Guide index](README.md)"), f"{name}: no navigation line"
            if i > 0 and path is course:
                assert f"previous: [{path[i - 1][:2]} · " in nav and f"({path[i - 1]})" in nav, name
            if i + 1 < len(path):
                assert f"next: [{path[i + 1][:2]} · " in nav and f"({path[i + 1]})" in nav, name
            else:
                assert "next:" not in nav, f"{name} is the last of its section"


def test_every_course_page_ends_with_its_exercise_and_questions():
    course, _ = course_order()
    for name in course:
        text = (DOCS / name).read_text()
        assert "\n## Do it yourself\n" in text, name
        end = text.split("\n## Do it yourself\n")[1]
        assert "**Exercise" in end and "**Questions.**" in end, name
        assert "\n## " not in end, f"{name}: the exercise is not the page's last section"
        assert 2 <= len(re.findall(r"^\d\. ", end, re.M)) <= 3, f"{name}: two or three questions"
        for exercise in re.findall(r"python -m exercises check (\w+)", end):
            assert (ROOT / "exercises" / f"{exercise}.py").is_file(), f"{name}: no exercise {exercise}"


def test_the_layer_figures_are_drawn_by_the_layers_own_code(monkeypatch):
    """Break col2im's scatter-add (assign instead of add, wrong where windows overlap): the figure
    drawn with it goes stale, so a change in the math cannot leave an old picture behind. (The
    2x2 max pool's windows do not overlap, so its figure is the same either way.)"""
    sys.path.insert(0, str(DOCS))
    try:
        import make_docs
    finally:
        sys.path.remove(str(DOCS))
    import nn.layers

    def col2im_assigning(dcols, x_shape, pads, sh, sw):
        n, h, w, c = x_shape
        _, ho, wo, kh, kw, _ = dcols.shape
        dx = np.zeros(x_shape, dcols.dtype)
        for a in range(kh):
            for b in range(kw):
                dx[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] = dcols[:, :, :, a, b]
        return dx

    monkeypatch.setattr(nn.layers, "col2im", col2im_assigning)
    stale = make_docs.stale()
    assert stale == ["docs/figures/col2im.png"], stale


def test_the_map_names_every_module_with_its_job():
    """docs/library.md's layout has a line per module of nn/ and stages/: its path under its
    package's line, then what it does."""
    text = (ROOT / "docs" / "library.md").read_text()
    layout = text[text.index("## Layout"):]
    listed, package = {}, None
    for line in layout.splitlines():
        if m := re.match(r"(nn/mnist/|nn/|stages/)\s", line):
            package = m[1]
        elif package and (m := re.match(r"  (\S+\.py)\s+(\S.*)", line)):
            listed[package + m[1]] = m[2]
    modules = {p.relative_to(ROOT).as_posix() for d in ("nn", "stages")
               for p in (ROOT / d).rglob("*.py") if p.name != "__init__.py"}
    assert sorted(modules - set(listed)) == [], "modules docs/library.md does not name"
    assert sorted(set(listed) - modules) == [], "docs/library.md names modules that are gone"
