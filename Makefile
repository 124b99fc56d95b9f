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

# The framework version matrix (make test-maf-matrix): the oldest 1.x MongoHistoryProvider
# supports and the newest release pip resolves today, each in its own virtualenv.
MAF_OLDEST ?= 1.0.0
MAF_OLDEST_VENV ?= .venv-maf-oldest
MAF_NEWEST_VENV ?= .venv-maf-newest
MAF_MATRIX_TESTS ?= tests/behaviour/test_framework_sessions.py tests/behaviour/test_agent_framework.py

VENV_BENCH ?= .venv-bench
BENCH_STAMP := $(VENV_BENCH)/.bench-installed

.PHONY: demo test lint typecheck api-docs ferretdb documentdb test-maf-old test-maf-matrix bench clean help

help:
	@echo "make demo   - install into $(VENV) and run the offline demo (no server needed)"
	@echo "make test   - install, lint, type-check and run every test tier this machine offers"
	@echo "make api-docs - regenerate docs/api.md from the docstrings"
	@echo "make documentdb - build the DocumentDB test tier once (root on Debian 12; make test does it)"
	@echo "make bench  - benchmarks against FerretDB (or MONGODB_URI) and DocumentDB; writes docs/benchmarks.md"

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

# Both ends of the supported agent-framework-core range (pyproject, README "Agent
# Framework versions"), on FerretDB: the oldest 1.x pinned, the newest resolved afresh
# whenever pyproject.toml changes (a clean CI checkout always gets the newest release, so
# one that breaks ChatLedger turns CI red). The seed's 1.0.0b260130 is test-maf-old.
$(MAF_OLDEST_VENV)/.chatledger-installed: pyproject.toml
	$(PYTHON) -m venv $(MAF_OLDEST_VENV)
	$(MAF_OLDEST_VENV)/bin/python -m pip install --quiet -e '.[test]' 'agent-framework-core==$(MAF_OLDEST)'
	touch $@

$(MAF_NEWEST_VENV)/.chatledger-installed: pyproject.toml
	$(PYTHON) -m venv $(MAF_NEWEST_VENV)
	$(MAF_NEWEST_VENV)/bin/python -m pip install --quiet --upgrade -e '.[test]' 'agent-framework-core<2'
	touch $@

test-maf-matrix: $(MAF_OLDEST_VENV)/.chatledger-installed $(MAF_NEWEST_VENV)/.chatledger-installed ferretdb
	@for venv in $(MAF_OLDEST_VENV) $(MAF_NEWEST_VENV); do \
		echo "== agent-framework-core $$($$venv/bin/python -c 'from importlib.metadata import version; print(version("agent-framework-core"))') ($$venv)"; \
		$$venv/bin/python -m pytest $(MAF_MATRIX_TESTS) -q -p no:cacheprovider || exit 1; \
	done

# The main suite runs last, so its summary is the run's closing line. It includes the
# packaging check (tests/packaging: the built wheel in a fresh virtualenv) and the
# documentation check (tests/docs: every README/docs code block runs as written).
# DocumentDB (PostgreSQL 15 extension) behind FerretDB v2: a tier with real indexes. Root on
# Debian only (it installs Debian packages and `make install`s the vendored extensions into the
# system PostgreSQL 15); once built, a stamp in .cache/documentdb makes this a no-op.
documentdb:
	@if [ -n "$$CHATLEDGER_SKIP_DOCUMENTDB" ] && [ "$$CI" != "true" ]; then echo "CHATLEDGER_SKIP_DOCUMENTDB set: DocumentDB tier skipped"; \
	else $(PYTHON) scripts/documentdb.py build --if-supported; fi

test: $(STAMP) ferretdb documentdb lint typecheck test-maf-old test-maf-matrix
	$(PY) -m pytest

# --- Dependency resolutions: the newest releases, and the lowest versions pyproject allows ---
# Each in its own virtualenv, on another Python than the main suite's 3.11 (newest on 3.13,
# oldest on 3.12), so every version the classifiers claim runs tests. One subset covers each
# dependency's use: the store on mongomock-motor and FerretDB through PyMongo and Motor
# (append/read), pydantic (bad input), orjson (codec), agent-framework-core (its adapter),
# cryptography (sealing, form cl3), Typer and Rich (the CLI, on mongomock and without a server).
RESOLUTION_TESTS := tests/behaviour/test_append_read.py tests/behaviour/test_codec.py \
	tests/behaviour/test_bad_input.py tests/behaviour/test_agent_framework.py tests/sealing/test_cl3.py
NEWEST_VENV ?= .venv-newest
OLDEST_VENV ?= .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.chatledger-installed
OLDEST_CONSTRAINTS := .cache/constraints-oldest.txt
# python$(1) on PATH, else pyenv's build of it (this machine's image has 3.11-3.13 there).
find_python = $(firstword $(foreach p,python$(1) $(wildcard $(shell pyenv root 2>/dev/null)/versions/$(1).*/bin/python$(1)),$(if $(filter $(1),$(shell $(p) -c 'import sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null)),$(p))))
PYTHON_NEWEST ?= $(call find_python,3.13)
PYTHON_OLDEST ?= $(call find_python,3.12)

# $(1) virtualenv, $(2) the Python version it should have, $(3) that interpreter (or empty).
define resolution_venv
	@if [ -z "$(3)" ]; then \
		if [ "$$CI" = "true" ]; then echo "CI=true: no Python $(2) for $(1), and the README says it is tested"; exit 1; fi; \
		echo "Python $(2) not found: $(1) uses $(PYTHON) instead"; fi
	[ -x $(1)/bin/python ] || $(or $(3),$(PYTHON)) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
endef

# $(1) virtualenv: the versions it resolved, then the subset, timed.
define resolution_suite
	$(1)/bin/python scripts/constraints.py installed
	@start=$$(date +%s); \
	$(1)/bin/python -m pytest -q -p no:cacheprovider $(RESOLUTION_TESTS) && \
	$(1)/bin/python -m pytest -q -p no:cacheprovider tests/admin/test_cli.py -k "not ferretdb" && \
	echo "$(1): the subset took $$(( $$(date +%s) - start )) s"
endef

# Re-resolved on every run: "newest" means today's releases, not the ones of the first run.
test-newest: ferretdb
	$(call resolution_venv,$(NEWEST_VENV),3.13,$(PYTHON_NEWEST))
	$(NEWEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[test]'
	$(call resolution_suite,$(NEWEST_VENV))

# agent-framework-core's range is the framework matrix's to test; left free here, pip picks
# the newest release that accepts the other lowest versions.
$(OLDEST_CONSTRAINTS): pyproject.toml scripts/constraints.py
	$(PYTHON) scripts/constraints.py lowest --exclude agent-framework-core -o $@

$(OLDEST_STAMP): $(OLDEST_CONSTRAINTS)
	$(call resolution_venv,$(OLDEST_VENV),3.12,$(PYTHON_OLDEST))
	$(OLDEST_VENV)/bin/python -m pip install --quiet -e '.[test]' -c $(OLDEST_CONSTRAINTS)
	touch $@

test-oldest: $(OLDEST_STAMP) ferretdb
	$(call resolution_suite,$(OLDEST_VENV))

test: test-newest test-oldest
.PHONY: test-newest test-oldest clean-resolutions
clean: clean-resolutions
clean-resolutions:
	rm -rf $(NEWEST_VENV) $(OLDEST_VENV)
# --- end of the dependency resolutions ---

# Benchmarks in their own virtualenv: the peers (langchain-mongodb, openai-agents,
# langgraph-checkpoint-mongodb) never become ChatLedger dependencies.
$(BENCH_STAMP): requirements-bench.txt pyproject.toml
	$(PYTHON) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_BENCH)/bin/python -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

# FerretDB v1 first (writes the page), then DocumentDB side by side with the peers (its own
# section of the page; skipped with a message where `make documentdb` has not built it), then
# admin at scale (seeded through mongomock, a test dependency: the dev venv runs it).
bench: $(BENCH_STAMP) $(STAMP) ferretdb
	$(VENV_BENCH)/bin/python scripts/bench.py
	$(VENV_BENCH)/bin/python scripts/bench_documentdb.py
	$(PY) scripts/bench_admin.py --scale 400x20
	$(PY) scripts/ferretdb.py run -- $(PY) scripts/bench_proofs.py
	$(PY) scripts/ferretdb.py run -- $(PY) scripts/bench_compaction.py
	$(VENV_BENCH)/bin/python scripts/bench_framework_stores.py --quick
	$(PY) scripts/bench_memory.py --sessions 30000 --warmup 16000

clean:
	rm -rf $(VENV) $(MAF_OLD_VENV) $(MAF_OLDEST_VENV) $(MAF_NEWEST_VENV) $(VENV_BENCH) .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis
