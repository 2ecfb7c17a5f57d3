# Quick start: `make demo` trains the default model; `make test` runs the test suite.
# Both create .venv on first use with the pinned versions in constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
OUT ?= runs/demo
PYTEST_ARGS ?= -n 2 -q

.PHONY: demo test test-slow venv bench lint docs clean

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
# C++ build; a few minutes)
test-slow: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) -m slow

bench: $(STAMP)
	$(PY) benchmarks/sampler_overhead.py

# The API reference, generated from the docstrings by pdoc (offline): docs/api/index.html
docs: $(STAMP)
	$(PY) docs/build_api.py docs/api

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache docs/api
