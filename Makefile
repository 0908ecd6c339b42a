# streamapp: `make run` runs the demo, `make test` runs the whole suite. Both set everything up.
SHELL := /bin/bash
# The interpreter: Python 3.13 where one runs (on the PATH, or a pyenv version that is not the
# active one), else python3 (3.11 or 3.12). PYTHON=python3.11 make ... picks another; the venv is
# made again when its interpreter is not the one picked.
PY313 := $(shell for p in python3.13 $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13; do \
  "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && { echo "$$p"; break; }; done)
PYTHON ?= $(or $(PY313),python3)
# The other supported interpreter, for `make test-other` (CI runs the unit tests on it too).
OTHER_PYTHON ?= $(if $(PY313),python3,)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
WORKERS ?= 1
FORMAT ?= json

.PHONY: run test test-other install browser containers prometheus kafka-up kafka-down lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), sys.version' || \
	  { echo "streamapp needs Python 3.11 or newer; set PYTHON=" >&2; exit 1; }
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print(sys.version_info[:2])')" != \
	  "$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])')" ]; then rm -rf $(VENV); fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

install: $(STAMP)

# Debian's chromium for the dashboard's browser test.
browser:
	@tools/install_chromium.sh

# Debian's buildah and podman for the image test (tests/deploy/test_image.py); it skips without them.
containers:
	@tools/install_containers.sh

# Debian's prometheus (promtool and the server) for the alert rules' tests; they skip without it.
prometheus:
	@tools/install_prometheus.sh

kafka-up:
	@tools/kafka/kafka.sh up

kafka-down:
	@tools/kafka/kafka.sh down

run: install
	@WORKERS=$(WORKERS) FORMAT=$(FORMAT) $(BIN)/python tools/run_demo.py

test: install browser containers prometheus
	@tools/with_kafka.sh $(BIN)/python -m pytest

# The unit tests on the other supported interpreter (3.11 when the default is 3.13), in .venv-other.
test-other:
	@if [ -z "$(OTHER_PYTHON)" ]; then echo "test-other: no second interpreter (Python 3.13 not found)"; \
	else $(MAKE) --no-print-directory install PYTHON=$(OTHER_PYTHON) VENV=.venv-other && \
	  .venv-other/bin/python -m pytest tests/unit -p no:cacheprovider; fi

# streamapp against River's own loop and the paper's plain consumer loop; writes bench/RESULTS.md.
# QUICK=1: a shorter run (about 13 minutes); SOAK=20m: also hold 70% of the maximum for 20 minutes.
bench: install
	@tools/with_kafka.sh $(BIN)/python -m bench.run $(if $(QUICK),--quick) $(if $(SOAK),--soak $(SOAK))

lint: install
	$(BIN)/ruff check streamapp tests tools bench
	$(BIN)/ruff format --check streamapp tests tools bench
	$(BIN)/mypy streamapp

clean:
	rm -rf $(VENV) .venv-other .kafka .registry data
