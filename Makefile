# The entry points: `make run` and `make test` set up .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
CHROMIUM := /usr/bin/chromium

.PHONY: install run test lint format bench clean chromium

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

# The web UI tests drive Debian's Chromium through Playwright (no browser is downloaded):
# install it when we can (root, apt-get); otherwise say why those tests will skip.
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Chromium for the web UI tests: apt-get install chromium"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
			|| echo "Could not install Chromium: the web UI tests will skip"; \
	else \
		echo "No $(CHROMIUM): the web UI tests will skip (as root: apt-get install -y chromium)"; \
	fi

test: lint chromium
	$(BIN)/pytest

format: install
	$(BIN)/ruff format memvault tests benchmarks
	$(BIN)/ruff check --fix memvault tests benchmarks

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
