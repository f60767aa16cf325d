# Two entry points for a fresh machine (Python 3.11+ and Go 1.26+ required):
#   make run   - the operator; on the embedded local control plane when no cluster is configured
#   make test  - lint, type-check, CRD drift check, unit and integration tests
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install run test lint unit build
install: $(BIN)/.installed

# The embedded control plane and its add-ons, built once and cached (~/.cache/workgate), with
# progress: the first cold build takes many minutes and must not hide inside the first test.
build: install
	$(BIN)/workgate dev build

run: install
	$(BIN)/workgate up

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/workgate crds --check

unit: install
	$(BIN)/pytest -q tests/unit

test: lint build
	$(BIN)/pytest -q -ra --durations=15 $(PYTEST_ARGS)
