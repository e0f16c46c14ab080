# genbot: `make dev` runs the bot locally, `make test` runs every test. Both set up .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: dev test lint bench render-bench reliability browser clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "genbot needs Python 3.11 or newer (set PYTHON=python3.12 if you have it)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

## Run everything on this machine: embedded Redis, SQLite, demo backend, chat at http://127.0.0.1:8000
dev: $(STAMP)
	$(BIN)/genbot dev

## The browser tests drive Debian's Chromium; install it when we can (root with apt), else they skip.
browser:
	@command -v chromium >/dev/null 2>&1 || [ -n "$$GENBOT_TEST_CHROMIUM" ] || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "note: no chromium on PATH; the browser tests will be skipped (apt install chromium)"; \
	fi

## Every test: unit, Redis, SQLite, PostgreSQL (skipped without a server outside CI), browser.
test: $(STAMP) browser
	$(BIN)/pytest

## Lint, types and layer contracts.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=examples/ask:examples/upscale $(BIN)/lint-imports

## Submit throughput against raw arq, printed as ratios.
bench: $(STAMP)
	$(BIN)/python -m bench.submit_throughput

## The render scheduler under Slack's limits against the renderer before it, printed as ratios.
render-bench: $(STAMP)
	$(BIN)/python -m bench.render_budget

## The fault-injection scenarios with bigger batches; writes the figures to docs/reliability.md.
reliability: $(STAMP)
	$(BIN)/python -m bench.reliability

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
