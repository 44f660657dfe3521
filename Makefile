# Two entry points: `make quickstart` (install + run the quickstart suite) and `make test`.
# Both create .venv when it is missing and (re)install when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUITE ?= benchmarks/suites/quickstart.yaml
# an index to install torch and torchvision from first, e.g. PyTorch's CPU wheels (a fraction of PyPI's CUDA
# build): make quickstart TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# the same ranges as pyproject.toml's
TORCH_REQS := "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"
# further pip arguments for every install (a mirror, --proxy, ...)
PIP_ARGS ?=

.PHONY: install quickstart test test-fast lint typecheck perf clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip $(PIP_ARGS)
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet $(TORCH_REQS) --index-url $(TORCH_INDEX) $(PIP_ARGS))
	$(BIN)/python -m pip install --quiet -e ".[dev]" $(PIP_ARGS)
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/sl2o run $(SUITE)

lint: install
	$(BIN)/ruff check .
	$(BIN)/pyright

typecheck: install
	$(BIN)/pyright

# everything but the end-to-end tests (Ray Tune + MLflow suites): the inner loop, about 7 minutes on 2 cores
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=300 -m "not e2e"

test: install
	$(BIN)/ruff check .
	$(BIN)/pyright
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900 --durations=25

clean:
	rm -rf sl2o_runs .pytest_cache
