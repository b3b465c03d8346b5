# One-command set-up: every target creates and uses .venv itself (only python3 is needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pytest's own worker count is not used: the suite is sized for a 2-core machine.
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime install (perfkit and its dependencies), redone when the build file changes.
BUILD_FILES := pyproject.toml
$(VENV)/.runtime: $(BUILD_FILES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[plot]"
	touch $@

# Development install: runtime plus test, lint and type-check tools.
$(VENV)/.dev: $(BUILD_FILES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/python -m examples.demo

lint: $(VENV)/.dev
	$(BIN)/ruff check perfkit tests examples benchmarks
	$(BIN)/ruff format --check perfkit tests examples benchmarks

typecheck: $(VENV)/.dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks need the comparison libraries (Lightning, faster-coco-eval); results go to benchmarks/RESULTS.md.
bench: $(VENV)/.dev
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.sampler
	$(BIN)/python -m benchmarks.flops
	$(BIN)/python -m benchmarks.coco_eval

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
