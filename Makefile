# Two commands do all the set-up: `make repro` (whole pipeline) and `make test` (test suite).
# Each creates .venv with Python 3.11+ and installs the project into it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install repro test bench demo clean

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

repro: install
	dvc repro

test: install
	pytest -q

bench: install
	python benchmarks/bench.py

# The drawing demo (nn serve) on http://127.0.0.1:8000/; trains the models first if they are missing.
demo: install
	@test -f models/mlp.npz -a -f models/cnn.npz || dvc repro
	nn serve

clean:
	rm -rf $(VENV) .pytest_cache
