# The README's two commands are `make demo` and `make test`; everything they need
# is installed by the targets below, so both work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-check test lint typecheck check bench services interop-deps browser-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m bearerguard demo

demo-check: $(STAMP)
	$(PY) -m bearerguard demo --self-test

# redis-server for the Redis tests; installed from the system packages when missing.
services:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; }

# The pinned oidc-provider used by the interop tests (tests/interop/package-lock.json).
interop-deps:
	@if [ -f tests/interop/package-lock.json ] && command -v npm >/dev/null 2>&1; then \
	  cd tests/interop && { [ -d node_modules ] || npm ci --silent --no-audit --no-fund; }; \
	fi

# Swagger UI's files, served to Chromium by the browser test (tests/browser/package-lock.json);
# the browser itself is Debian's chromium, which .ci/run installs.
browser-deps:
	@if [ -f tests/browser/package-lock.json ] && command -v npm >/dev/null 2>&1; then \
	  cd tests/browser && { [ -d node_modules ] || npm ci --silent --no-audit --no-fund; }; \
	fi

test: $(STAMP) services interop-deps browser-deps
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test demo-check

bench: $(STAMP) services
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info
