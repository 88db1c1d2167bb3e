# Two entry points: `make run` and `make test`. Every install step lives here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MEDIA ?= ../shared/media
SAMPLE ?= $(MEDIA)/videoretalking__face_2.mp4

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

run: install
	$(BIN)/lipdub identify $(SAMPLE) --out .lipdub/sample

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: install-dev lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .lipdub .pytest_cache .mypy_cache .ruff_cache
