# streamapp: `make run` runs the demo, `make test` runs the whole suite. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKERS ?= 1
FORMAT ?= json

.PHONY: run test install browser kafka-up kafka-down lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the dashboard's browser test.
browser:
	@tools/install_chromium.sh

kafka-up:
	@tools/kafka/kafka.sh up

kafka-down:
	@tools/kafka/kafka.sh down

run: install
	@WORKERS=$(WORKERS) FORMAT=$(FORMAT) $(BIN)/python tools/run_demo.py

test: install browser
	@tools/with_kafka.sh $(BIN)/python -m pytest

# streamapp against River's own loop and the paper's plain consumer loop; writes bench/RESULTS.md.
# QUICK=1: a short run (about 4 minutes); SOAK=20m: also hold 70% of the maximum for 20 minutes.
bench: install
	@tools/with_kafka.sh $(BIN)/python -m bench.run $(if $(QUICK),--quick) $(if $(SOAK),--soak $(SOAK))

lint: install
	$(BIN)/ruff check streamapp tests tools bench
	$(BIN)/ruff format --check streamapp tests tools bench
	$(BIN)/mypy streamapp

clean:
	rm -rf $(VENV) .kafka data
