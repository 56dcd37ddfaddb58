# Quickstart targets (see README). Everything installs into ./.venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint fix perf leaderboard clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,ray]'
	touch $@

DEMO_SUBS := submissions/pixels_ridge submissions/effnet_lite0_ridge

## demo: install (plus bubblewrap where possible), then score the two starter submissions on the
## embedded (synthetic) demo benchmark, sandboxed; without bubblewrap it says so and runs the
## project's own starter code with the explicit --unsandboxed flag
demo: $(STAMP)
	-@bash .ci/setup-system.sh sandbox
	@if $(BIN)/python -c "import sys; from itbench.harness import sandbox; sys.exit(0 if sandbox.available() else 1)"; then \
	  $(BIN)/itbench score $(DEMO_SUBS) --benchmark demo; \
	else \
	  echo "NOTE: no working bubblewrap here ($$($(BIN)/python -c 'from itbench.harness import sandbox; print(sandbox.unavailable_reason())'))."; \
	  echo "NOTE: the demo runs the project's OWN starter submissions with --unsandboxed; never score code you did not write that way."; \
	  echo "NOTE: install bubblewrap (sudo apt-get install bubblewrap) to score submissions sandboxed."; \
	  $(BIN)/itbench score $(DEMO_SUBS) --benchmark demo --unsandboxed; \
	fi

## test: install (plus bubblewrap and headless Chromium when possible), check the house style, run the tests
test: $(STAMP)
	-bash .ci/setup-system.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider

## lint: ruff (lint + format check) and mypy, as CI runs them
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## fix: apply ruff's automatic fixes and format the tree
fix: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## perf: speed and memory targets, printed side by side (perf/)
perf: $(STAMP)
	$(BIN)/itbench perf

leaderboard: $(STAMP)
	$(BIN)/itbench leaderboard

clean-venv:
	rm -rf $(VENV)
