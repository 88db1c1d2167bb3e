# Two entry points: `make run` and `make test`. Every install step lives here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install install-dev system-deps node-deps lint clean bench-deps

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
# shared media); flite speaks with another synthesizer's voice (the articulation tests). Debian's chromium runs the console's browser tests (Playwright drives it;
# Playwright's own browser download is never used). Installed only when missing; CI runs
# as root.
system-deps:
	@command -v espeak-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; }
	@command -v flite >/dev/null || { apt-get update -qq && apt-get install -y -qq flite >/dev/null; }
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

install-dev: $(VENV)/.installed-dev system-deps node-deps

# Benchmarks only (never make test): Festival and flite voices for the viseme model's
# held-out synthesizers (tools/othertts.py; kal and slt are left out on purpose: they are
# kept for independent checks), scikit-learn to train the model, and MediaPipe's face
# mesh, bench/motion.py's independent landmark instrument, in a venv of its own
# (.venv-mp): it brings its own OpenCV and protobuf. 0.10.14 is pinned because it is the
# last release whose wheel ships the face-mesh model; later ones download it at run time.
BENCH_VOICES := festival flite festvox-kdlpc16k festvox-italp16k festvox-itapc16k \
	festvox-czech-dita festvox-czech-machac festvox-czech-ph festvox-suopuhe-lj \
	festvox-suopuhe-mv festvox-ca-ona-hts festvox-ru festvox-czech-krb festvox-hi-nsk
bench-deps: install-dev
	@command -v flite >/dev/null && test -d /usr/share/festival/voices/hindi/hindi_NSK_diphone || { \
		apt-get update -qq && apt-get install -y -qq $(BENCH_VOICES) >/dev/null; }
	$(BIN)/pip install -q scikit-learn pocketsphinx==5.1.1  # 5.x wheels ship the en-us model
	test -x .venv-mp/bin/python || $(PY) -m venv .venv-mp
	.venv-mp/bin/pip install -q mediapipe==0.10.14

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
	rm -rf $(VENV) .venv-mp .lipdub .pytest_cache .mypy_cache .ruff_cache
