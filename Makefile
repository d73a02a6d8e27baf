# Every target bootstraps .venv (from pyproject.toml + requirements.lock) if it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test lint format bench bench-peers bench-http chaos migrate worker api venv clean

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The optional `bench` group (saq, taskiq, taskiq-redis, psutil), for bench-peers only.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

## run: migrate, then start the API (port 8000) and one worker; Ctrl-C stops both
run: venv
	./scripts/run.sh

## test: the whole suite against real Redis and PostgreSQL (TEST_REDIS_URL, TEST_DATABASE_URL),
## in TEST_PROCESSES processes (each with its own database and Redis database; a file stays in one)
TEST_PROCESSES ?= 2
test: venv
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports architecture.ini

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python -m bench.queue

## bench-peers: the module against saq, taskiq and arq on a private Redis (BENCH_ARGS: flags)
bench-peers: $(BENCH_STAMP)
	$(BIN)/python -m bench.peers $(BENCH_ARGS)

## bench-http: 50 virtual users for 30 s against a private API and one worker (BENCH_ARGS: flags)
bench-http: venv
	$(BIN)/python -m bench.http_load --start $(BENCH_ARGS)

## chaos: kill workers, restart Redis empty, drop DB connections under load; check every job
chaos: venv
	$(BIN)/python -m bench.chaos

migrate: venv
	$(BIN)/alembic upgrade head

worker: venv
	$(BIN)/arq src.arq.worker.WorkerSettings

api: venv
	$(BIN)/uvicorn src.main:app --host 127.0.0.1 --port 8000

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
