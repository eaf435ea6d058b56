# The two commands of the README: `make run` and `make test`.
# Everything they need is installed from this repository's own files.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MAILFLOW_CORPUS ?= $(abspath ../shared/corpus)
export MAILFLOW_CORPUS

.PHONY: run test system-deps bench lint clean

$(BIN)/mailflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

run: $(BIN)/mailflow
	$(BIN)/mailflow dev

system-deps:
	@if [ "$$(id -u)" = 0 ]; then scripts/install-system-deps.sh; \
	 else sudo scripts/install-system-deps.sh; fi

test: $(BIN)/mailflow system-deps
	$(BIN)/pytest -q -n auto

bench: $(BIN)/mailflow system-deps
	$(BIN)/python benchmarks/run.py

lint: $(BIN)/mailflow
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
