# pictguard — `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: env demo test lint format bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev]'
	# helm-sdkpy declares Python >= 3.12 but works on 3.11 (see shared TESTING.md).
	$(VENV)/bin/pip install -q --no-deps --ignore-requires-python helm-sdkpy
	touch $(STAMP)

demo: env
	$(PY) -m pipeline.demo

test: env
	$(VENV)/bin/pytest

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: env
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: env
	$(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) .pictguard .demo .pytest_cache .mypy_cache .ruff_cache
