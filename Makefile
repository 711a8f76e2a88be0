# The entry points: `make run` and `make test` set up .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install run test lint format bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/memvault serve

lint: install
	$(BIN)/ruff check memvault tests benchmarks
	$(BIN)/ruff format --check memvault tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

format: install
	$(BIN)/ruff format memvault tests benchmarks
	$(BIN)/ruff check --fix memvault tests benchmarks

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
