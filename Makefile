# genbot: `make dev` runs the bot locally, `make test` runs every test. Both set up .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: dev test lint bench render-bench reliability fleet-bench browser clean

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

## Each figure against its anchor, measured in the same run (about 7 minutes on 2 cores): submit
## and whole-request throughput against raw arq (PostgreSQL, SQLite); a worker's drain of 2,000
## instant jobs against a bare arq worker; SQL statements per progress report of 10 jobs running at
## once, the worker's progress writer against one write a report (counted); the renderer's CPU per
## job against bare writes; position read and sweep at 100,000 queued rows against bare reads; the
## bot's memory with 10,000 active jobs against the same process idle; the ack p99 at 200 concurrent
## /imagine of the local chat against a bare aiohttp server, and of Slack's HTTP mode (signed slash
## commands, the fake Web API) against a bare slack-bolt app. See bench/README.md.
bench: $(STAMP)
	$(BIN)/python -m bench.submit_throughput
	$(BIN)/python -m bench.submit_throughput --db sqlite --counted 0
	$(BIN)/python -m bench.worker_drain
	$(BIN)/python -m bench.progress_writes
	$(BIN)/python -m bench.render_cpu
	$(BIN)/python -m bench.queue_scale
	$(BIN)/python -m bench.bot_memory
	$(BIN)/python -m bench.ack_latency
	$(BIN)/python -m bench.ack_latency_slack

## The render scheduler under Slack's limits against the renderer before it, printed as ratios.
render-bench: $(STAMP)
	$(BIN)/python -m bench.render_budget

## The fault-injection scenarios with bigger batches; writes the figures to docs/reliability.md.
reliability: $(STAMP)
	$(BIN)/python -m bench.reliability

## 1, 4 and 16 worker hosts (network namespaces, as root) against one Redis and one PostgreSQL;
## writes the figures to docs/scaling.md (about 7 minutes on 2 cores).
fleet-bench: $(STAMP)
	$(BIN)/python -m bench.fleet

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
