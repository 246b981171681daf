# Each target is idempotent: it creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned here, before the project, so pip never swaps in another build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
# Python writes a module's bytecode (.pyc) when it first imports it; where the environment
# sets PYTHONDONTWRITEBYTECODE, every process (each Ray worker) would compile torch and Ray
# again at each import. An empty value unsets it for everything make runs.
export PYTHONDONTWRITEBYTECODE :=
PYTEST_ARGS ?=

.PHONY: setup data browser demo test lint bench clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@# --no-compile: pip byte-compiles every module it installs, on one core (45 s of 100 s
	@# here); Python compiles the ones imported, on first import (see PYTHONDONTWRITEBYTECODE).
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet --no-compile $(TORCH_SPEC)
	@# setuptools warns on every editable install (a BuildBackendWarning, a UserWarning) that
	@# folders named like the package may shadow it; here they are the package itself.
	PYTHONWARNINGS=ignore::UserWarning $(PY) -m pip install --quiet --no-compile -e '.[dev]'
	@touch $(STAMP)

# Fashion-MNIST ships as a Debian package; elsewhere torchvision downloads it when online.
data:
	@bash scripts/install-data.sh

# Headless Chromium renders the HTML report in a test.
browser:
	@bash scripts/install-browser.sh

# The default study; a second `make demo` resumes (or just re-reports) the same run folder.
demo: setup
	$(PY) study/sweep.py --space ablations.yaml $$(test -f runs/ablations/space.yaml && echo --resume)

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
