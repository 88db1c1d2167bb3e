# Two entry points: `make run` and `make test`. Every install step lives here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install install-dev system-deps lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

# espeak-ng synthesises the French speech the tests need (no French recording is in the
# shared media). Installed only when missing; CI runs as root.
system-deps:
	@command -v espeak-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; }

install-dev: $(BIN)/python system-deps
	$(BIN)/pip install -q -e '.[dev]'

# The embedded default: SQLite + local disk under LIPDUB_DATA_DIR (./.lipdub), in-process
# workers. Create a key first with `.venv/bin/lipdub keys create NAME --credits 5`.
HOST ?= 127.0.0.1
PORT ?= 8000
run: install
	$(BIN)/lipdub serve --host $(HOST) --port $(PORT)

lint: install-dev
	$(BIN)/ruff check src tests bench tools
	$(BIN)/mypy

test: install-dev lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .lipdub .pytest_cache .mypy_cache .ruff_cache
