# ChatLedger developer commands. Quickstart: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.chatledger-installed

.PHONY: demo test lint typecheck unit ferretdb clean help

help:
	@echo "make demo   - install into $(VENV) and run the offline demo (no server needed)"
	@echo "make test   - install, lint, type-check and run every test tier this machine offers"
	@echo "make bench  - benchmarks against FerretDB (and MONGODB_URI if set); writes docs/benchmarks.md"

# (Re)install whenever the project's metadata changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/chatledger demo

lint: $(STAMP)
	$(PY) -m ruff check src tests scripts

typecheck: $(STAMP)
	$(PY) -m mypy

# Builds the pinned FerretDB (tools/ferretdb/go.mod) into .cache/bin once, if Go exists.
ferretdb:
	@if command -v go >/dev/null 2>&1; then $(PYTHON) scripts/ferretdb.py build; \
	else echo "Go not found: the FerretDB tier will be skipped (CI=true makes that an error)"; fi

test: $(STAMP) ferretdb lint typecheck
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis
