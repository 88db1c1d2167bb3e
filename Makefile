# Two entry points: `make run` and `make test`. Every install step lives here.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MEDIA ?= ../shared/media
SAMPLE ?= $(MEDIA)/videoretalking__face_2.mp4

.PHONY: run test install install-dev lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-dev: $(BIN)/python
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
