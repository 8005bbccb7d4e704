# Two commands do all the set-up: `make repro` (whole pipeline) and `make test` (test suite).
# Each creates .venv with Python 3.11+ and installs the project into it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install repro pull push report-change test test-fast bench demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@# dvc.yaml's commands say `python`: a .pth file puts the venv's bin/ first on PATH for every
	@# process the venv's Python starts, so `.venv/bin/dvc repro` runs them with the venv's Python
	@# even when the venv is not activated.
	printf '%s\n' 'import os, sys; d = os.path.dirname(sys.executable); p = os.environ.get("PATH", ""); os.environ["PATH"] = p if p.startswith(d + os.pathsep) else d + os.pathsep + p' \
	  > "$$($(VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/mnist_nn_path.pth"
	touch $@

# With a default DVC remote (docs/team.md): first the outputs dvc.lock names and the run-cache's
# entries from it, then dvc repro --pull (a changed stage already run elsewhere is restored from
# the run-cache); what the remote cannot give (one line says why), dvc repro trains.
# With no default remote: dvc repro alone, as without a network.
repro: install
	@if ! dvc remote default >/dev/null 2>&1; then dvc repro; \
	elif nn pull --run-cache; then dvc repro --pull; \
	else echo "repro: dvc repro trains what could not be pulled"; dvc repro; fi

pull: install
	nn pull --run-cache

push: install
	nn push --run-cache

# The Markdown a reviewer reads on a pull request: this workspace against BASE (default main).
BASE ?= main
report-change: install
	nn change-report --base $(BASE) --out change-report

test: install
	pytest -q

# The inner loop: every test but the slow ones (over ~2 s each), in under a minute.
test-fast: install
	pytest -q -m 'not slow'

bench: install
	python benchmarks/bench.py

# The drawing demo (nn serve) on http://127.0.0.1:8000/; trains the models first if they are missing.
demo: install
	@test -f models/mlp.npz -a -f models/cnn.npz || dvc repro
	nn serve

clean:
	rm -rf $(VENV) .pytest_cache
