# One-command set-up: every target creates and uses .venv itself (only python3 is needed).
# Installs use the tested pins of CONSTRAINTS (pyproject.toml itself has ranges only).
PYTHON ?= python3
VENV   ?= .venv
CONSTRAINTS ?= constraints/newest.txt
BIN    := $(VENV)/bin
# The oldest supported stack (torch 2.1.2) has wheels up to Python 3.11 only.
PYTHON_OLDEST ?= python3.11
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c $(CONSTRAINTS)
# pytest's own worker count is not used: the suite is sized for a 2-core machine.
PYTEST_ARGS ?=

.PHONY: demo test test-oldest pytest lint typecheck bench clean package-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime install (perfkit and its dependencies), redone when a build file changes.
BUILD_FILES := pyproject.toml $(CONSTRAINTS)
$(VENV)/.runtime: $(BUILD_FILES) | $(BIN)/python
	$(PIP_INSTALL) -e ".[plot,examples]"
	touch $@

# Development install: runtime plus test, lint and type-check tools (DEV_EXTRA=test: tests only).
DEV_EXTRA ?= dev
$(VENV)/.dev: $(BUILD_FILES) | $(BIN)/python
	$(PIP_INSTALL) -e ".[$(DEV_EXTRA)]"
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/python -m examples.demo

lint: $(VENV)/.dev
	$(BIN)/ruff check perfkit tests examples benchmarks
	$(BIN)/ruff format --check perfkit tests examples benchmarks

typecheck: $(VENV)/.dev
	$(BIN)/mypy

test: lint typecheck pytest

pytest: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Offline packaging check (CI): sdist and wheel built, the wheel installed in a fresh venv, where
# import perfkit, perfkit --help and the README's quick start run; the sdist's tests run from it.
package-check: $(VENV)/.dev
	$(BIN)/python .ci/package_check.py

# The suite on the oldest supported stack, in a venv of its own (CI runs it after `make test`).
test-oldest:
	$(MAKE) pytest VENV=.venv-oldest CONSTRAINTS=constraints/oldest.txt PYTHON=$(PYTHON_OLDEST) \
		DEV_EXTRA=test

# Benchmarks need the comparison libraries (Lightning, faster-coco-eval); results go to benchmarks/RESULTS.md.
bench: $(VENV)/.dev
	$(PIP_INSTALL) -e ".[bench]"
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.sampler
	$(BIN)/python -m benchmarks.flops
	$(BIN)/python -m benchmarks.coco_eval
	$(BIN)/python -m benchmarks.many_runs

clean:
	rm -rf $(VENV) .venv-oldest runs .mypy_cache .ruff_cache .pytest_cache
