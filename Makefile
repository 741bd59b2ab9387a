# Two commands that work on a fresh machine with only Python 3.11+:
#   make demo   set up, then mirror a generated SQLite database into ./demo-lake and query it
#   make test   set up, then run the test suite (moto S3 and PostgreSQL are started by the tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Test processes for make test (pytest-xdist): one per core. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= auto
BENCH_ARGS ?=

.PHONY: setup demo test test-quick test-crash bench lint docs proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python -m rhei_lake.demo

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-quick: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow and not s3 and not postgres" $(PYTEST_ARGS)

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@

# Every scenario beside its physical limit; results in bench/results/ (BENCH_ARGS=--quick: ~2 minutes).
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

# The long budgets of the reliability suite: the full crash matrix (well over a hundred kill points) and
# every fuzzer family alone and together. The rest of tests/reliability runs in `make test`; with
# RHEI_RELIABILITY_SUMMARY set, both add their figures to that file.
test-crash: setup
	RHEI_CRASH_FULL=1 $(BIN)/python -m pytest tests/reliability/test_crash_matrix.py \
		tests/reliability/test_differential_fuzz.py $(PYTEST_ARGS)

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	touch $@

# Lint rules and formatting (ruff, also the Python blocks of the Markdown docs), types (mypy: strict
# on the public API) and one-way imports between the layers (import-linter, docs/architecture.md).
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Rewrite the generated parts of docs/ (the CLI and configuration references from the code, the
# reliability figures from docs/reliability-last-run.json); tests/test_docs_reference.py fails when
# the committed pages differ from what this writes.
docs: setup
	$(BIN)/python -m tools.gen_docs

# Recompile proto/FlightSql.proto into rhei_lake/flight/flight_sql_pb2.py(i) with the `proto` extra's
# pinned grpcio-tools, in a virtual environment of its own (its protobuf pin stays out of $(VENV)).
PROTO_VENV ?= .venv-proto
proto:
	test -x $(PROTO_VENV)/bin/python || $(PYTHON) -m venv $(PROTO_VENV)
	$(PROTO_VENV)/bin/python -m pip install --quiet $$($(PYTHON) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['proto'])")
	$(PROTO_VENV)/bin/python proto/generate.py

clean:
	rm -rf demo.db demo.db-wal demo.db-shm demo.db-lake demo-restored.db .pytest_cache
