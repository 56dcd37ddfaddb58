# Quickstart targets (see README). Everything installs into ./.venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench leaderboard clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

## demo: install, then score the two starter submissions on the embedded (synthetic) demo benchmark
demo: $(STAMP)
	$(BIN)/itbench score submissions/pixels_ridge submissions/effnet_lite0_ridge --benchmark demo

## test: install (plus headless Chromium for the browser test when possible), then run the test suite
test: $(STAMP)
	-bash .ci/setup-system.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider

## bench: speed and memory targets, printed side by side
bench: $(STAMP)
	$(BIN)/itbench bench

leaderboard: $(STAMP)
	$(BIN)/itbench leaderboard

clean-venv:
	rm -rf $(VENV)
