# Quick start: `make demo` trains the default model; `make test` runs the test suite.
# Both create .venv on first use with the pinned versions in constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
OUT ?= runs/demo
PYTEST_ARGS ?= -n 2 -q

.PHONY: demo test test-slow test-min venv bench lint docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ebmlab train --config default --out $(OUT) --overwrite

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The slow tests (-m slow: paper 002's toy on five seeds, two distributed launches, the fused-MALA probe's
# C++ build, whether observing a run changes it, the quick experiments of papers 000 and 003, the README's own-method
# example in fresh processes, the pairs of features, the kill and SIGTERM runs, the GPU check's CPU smoke, every
# write killed in turn, torchrun with selection; about 8 minutes on 2 cores)
test-slow: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) -m slow

# The suite on the oldest versions ebmlab declares (constraints-min.txt: torch 2.3, NumPy 1.24, ...) and the oldest
# Python, in .venv-min (PyPI's torch 2.3 for Linux is a CUDA build: about 5 GB, downloaded once; it runs on the CPU)
PYTHON_MIN ?= python3.10
test-min:
	$(PYTHON_MIN) -m venv .venv-min
	.venv-min/bin/python -m pip install -q -c constraints-min.txt -e '.[dev]'
	.venv-min/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/sampler_overhead.py

# The API reference, generated from the docstrings by pdoc (offline): docs/api/index.html
docs: $(STAMP)
	$(PY) docs/build_api.py docs/api

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .venv-min runs .pytest_cache docs/api
