# The two commands of the README: `make serve` and `make test`. Both set up .venv on a fresh machine.
# Every install takes its versions from constraints.txt, so that a new release elsewhere cannot
# change what CI runs; `make lock` refreshes it on purpose (commit it with a message saying so).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := constraints.txt

.PHONY: serve test lint typecheck unit bench screenshots lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.serve-installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test]'
	touch $@

serve: $(VENV)/.serve-installed
	$(BIN)/freellm serve

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy

unit: $(VENV)/.test-installed
	$(BIN)/pytest

test: lint typecheck unit

# Every dashboard page, light and dark, laptop and phone, into screenshots/ (with page weights).
screenshots: $(VENV)/.test-installed
	$(BIN)/pytest -q tests/e2e/test_dashboard_browser.py -k photographed
	@cat screenshots/weights-light.txt

bench: $(VENV)/.serve-installed
	$(BIN)/python bench/core_bench.py

# Resolve every extra afresh in a scratch venv and write the versions it got to constraints.txt.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test,bench]'
	{ echo "# The versions every install uses (make serve, make test). Refresh on purpose: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | LC_ALL=C sort -f; } > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
