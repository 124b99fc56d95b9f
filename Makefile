# ChatLedger developer commands. Quickstart: `make demo`, `make test`.
PYTHON ?= python3
# FerretDB must never report home: every start goes through scripts/ferretdb.py, which
# passes --telemetry=disable; DO_NOT_TRACK=1 also covers anything this Makefile runs.
export DO_NOT_TRACK := 1
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.chatledger-installed

MAF_OLD_VENV ?= .venv-maf-old
MAF_OLD_PY := $(MAF_OLD_VENV)/bin/python
MAF_OLD_STAMP := $(MAF_OLD_VENV)/.chatledger-installed

VENV_BENCH ?= .venv-bench
BENCH_STAMP := $(VENV_BENCH)/.bench-installed

.PHONY: demo test lint typecheck api-docs ferretdb documentdb test-maf-old bench clean help

help:
	@echo "make demo   - install into $(VENV) and run the offline demo (no server needed)"
	@echo "make test   - install, lint, type-check and run every test tier this machine offers"
	@echo "make api-docs - regenerate docs/api.md from the docstrings"
	@echo "make documentdb - build the DocumentDB test tier once (root on Debian 12; make test does it)"
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
	$(PY) -m ruff check src tests scripts compat

typecheck: $(STAMP)
	$(PY) -m mypy

# The API reference, generated from the docstrings (tests/docs checks that it builds).
api-docs: $(STAMP)
	$(PY) -m tests.docs.apiref > docs/api.md

# Builds the pinned FerretDB (tools/ferretdb/go.mod) into .cache/bin once, if Go exists.
ferretdb:
	@if command -v go >/dev/null 2>&1; then $(PYTHON) scripts/ferretdb.py build; \
	else echo "Go not found: the FerretDB tier will be skipped (CI=true makes that an error)"; fi

# The seed notebook's own framework (agent-framework-core 1.0.0b260130), in its own
# virtualenv: ChatAgent + chat_message_store_factory=MongoChatMessageStore on FerretDB.
# The install is the documented one (README: "The seed's framework"), resolved with
# dependencies; the pins only make the run reproducible.
$(MAF_OLD_STAMP): compat/maf_1_0_0b260130/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(MAF_OLD_VENV)
	$(MAF_OLD_PY) -m pip install --quiet -r compat/maf_1_0_0b260130/requirements.txt
	$(MAF_OLD_PY) -m pip install --quiet -e . 'agent-framework-core==1.0.0b260130'
	touch $(MAF_OLD_STAMP)

test-maf-old: $(MAF_OLD_STAMP) ferretdb
	$(MAF_OLD_PY) -c "from chatledger import *; import chatledger; print('chatledger', chatledger.__version__, 'imports on agent-framework-core 1.0.0b260130')"
	@if command -v go >/dev/null 2>&1 || [ -x .cache/bin/ferretdb ] || [ -n "$$CHATLEDGER_TEST_FERRETDB_URI" ]; then \
		$(MAF_OLD_PY) -m pytest compat/maf_1_0_0b260130 -p no:cacheprovider; \
	elif [ "$$CI" = "true" ]; then echo "CI=true: the old-framework check needs FerretDB (Go)"; exit 1; \
	else echo "old Agent Framework check skipped: no Go to build FerretDB"; fi

# The main suite runs last, so its summary is the run's closing line. It includes the
# packaging check (tests/packaging: the built wheel in a fresh virtualenv) and the
# documentation check (tests/docs: every README/docs code block runs as written).
# DocumentDB (PostgreSQL 15 extension) behind FerretDB v2: a tier with real indexes. Root on
# Debian only (it installs Debian packages and `make install`s the vendored extensions into the
# system PostgreSQL 15); once built, a stamp in .cache/documentdb makes this a no-op.
documentdb:
	@if [ -n "$$CHATLEDGER_SKIP_DOCUMENTDB" ] && [ "$$CI" != "true" ]; then echo "CHATLEDGER_SKIP_DOCUMENTDB set: DocumentDB tier skipped"; \
	else $(PYTHON) scripts/documentdb.py build --if-supported; fi

test: $(STAMP) ferretdb documentdb lint typecheck test-maf-old
	$(PY) -m pytest

# Benchmarks in their own virtualenv: the peers (langchain-mongodb, openai-agents,
# langgraph-checkpoint-mongodb) never become ChatLedger dependencies.
$(BENCH_STAMP): requirements-bench.txt pyproject.toml
	$(PYTHON) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_BENCH)/bin/python -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ferretdb
	$(VENV_BENCH)/bin/python scripts/bench.py

clean:
	rm -rf $(VENV) $(MAF_OLD_VENV) $(VENV_BENCH) .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis
