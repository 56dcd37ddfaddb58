# Quickstart targets (see README). Everything installs into ./.venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint fix perf leaderboard clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

## demo: install, then score the two starter submissions on the embedded (synthetic) demo benchmark
demo: $(STAMP)
	$(BIN)/itbench score submissions/pixels_ridge submissions/effnet_lite0_ridge --benchmark demo

## test: install (plus bubblewrap and headless Chromium when possible), check the house style, run the tests
test: $(STAMP)
	-bash .ci/setup-system.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

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
