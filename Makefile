# Two entry points: `make run` and `make test`. Every install step lives here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install install-dev system-deps node-deps lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamp files: the install reruns only when pyproject.toml changes, so `make run` starts
# in seconds after the first time.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# espeak-ng synthesises the French speech the tests need (no French recording is in the
# shared media). Debian's chromium runs the console's browser tests (Playwright drives it;
# Playwright's own browser download is never used). Installed only when missing; CI runs
# as root.
system-deps:
	@command -v espeak-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; }
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

install-dev: $(VENV)/.installed-dev system-deps node-deps

# Express, for the test that runs the contract's own Node/Express callback receiver
# unchanged (the JavaScript client itself has no dependencies). Local to the venv.
NODE_DEPS := $(VENV)/node/node_modules/express/package.json
$(NODE_DEPS):
	mkdir -p $(VENV)/node
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node express@4
node-deps: $(NODE_DEPS)

# The embedded default: SQLite + local disk under LIPDUB_DATA_DIR (./.lipdub), in-process
# workers. The first start creates a development key and prints how to use it.
HOST ?= 127.0.0.1
PORT ?= 8000
run: install
	$(BIN)/lipdub serve --host $(HOST) --port $(PORT) --dev-key

# lint-imports: the layering contract in pyproject.toml (engine layers in order, the
# service's sub-packages above one another, no cycles); see docs/architecture.md.
lint: install-dev
	$(BIN)/ruff check src tests bench tools
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: install-dev lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .lipdub .pytest_cache .mypy_cache .ruff_cache
