# Two entry points: `make quickstart` (install + run the quickstart suite) and `make test`.
# Both create .venv when it is missing and (re)install when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUITE ?= benchmarks/suites/quickstart.yaml

.PHONY: install quickstart test test-fast lint typecheck perf clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/sl2o run $(SUITE)

lint: install
	$(BIN)/ruff check .
	$(BIN)/pyright

typecheck: install
	$(BIN)/pyright

# everything but the end-to-end tests (Ray Tune + MLflow suites): the inner loop, under 2 minutes
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=300 -m "not e2e"

test: install
	$(BIN)/ruff check .
	$(BIN)/pyright
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900

clean:
	rm -rf sl2o_runs .pytest_cache
