# streamapp: `make run` runs the demo, `make test` runs the whole suite. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKERS ?= 1

.PHONY: run test install kafka-up kafka-down lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

kafka-up:
	@tools/kafka/kafka.sh up

kafka-down:
	@tools/kafka/kafka.sh down

run: install
	@WORKERS=$(WORKERS) $(BIN)/python tools/run_demo.py

test: install
	@tools/with_kafka.sh $(BIN)/python -m pytest

# Throughput against the bare River loop, snapshot cost, fail-over time (minutes, not seconds).
bench: install
	@tools/with_kafka.sh bash -c '$(BIN)/python -m bench.throughput && $(BIN)/python -m bench.snapshot_cost \
		&& $(BIN)/python -m bench.failover --signal KILL && $(BIN)/python -m bench.failover --signal TERM'

lint: install
	$(BIN)/ruff check streamapp tests tools bench
	$(BIN)/ruff format --check streamapp tests tools bench
	$(BIN)/mypy streamapp

clean:
	rm -rf $(VENV) .kafka data
