# The README's two commands are `make demo` and `make test`; everything they need
# is installed by the targets below, so both work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-check test lint typecheck check docs bench services interop-deps browser-deps fuzz clean

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

# The pinned oidc-provider and oauth4webapi used by the interop tests
# (tests/interop/package-lock.json); installed again whenever the lock is newer.
interop-deps:
	@if [ -f tests/interop/package-lock.json ] && command -v npm >/dev/null 2>&1; then \
	  cd tests/interop && { [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --silent --no-audit --no-fund; }; \
	fi

# Swagger UI's files, served to Chromium by the browser test (tests/browser/package-lock.json);
# the browser itself is Debian's chromium, which .ci/run installs.
browser-deps:
	@if [ -f tests/browser/package-lock.json ] && command -v npm >/dev/null 2>&1; then \
	  cd tests/browser && { [ -d node_modules ] || npm ci --silent --no-audit --no-fund; }; \
	fi

test: $(STAMP) services interop-deps browser-deps
	$(PY) -m pytest -n auto

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test demo-check

# The documentation site (mkdocs.yml, docs/): warnings are errors.
docs: $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

bench: $(STAMP) services
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks

# Coverage-guided fuzzing (atheris) of the parsers and the middleware's request handling,
# for FUZZ_SECONDS (60). Seeds from tests/conformance/fuzz_seeds; the corpus it grows and
# any crashing input go to .fuzz/ (copy a crash into tests/conformance/fuzz_crashes/:
# the suite replays every file there).
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(PY) -m pip install --quiet -e '.[fuzz]'
	mkdir -p .fuzz/corpus
	cp -n tests/conformance/fuzz_seeds/* .fuzz/corpus/
	$(PY) tests/conformance/run_fuzzer.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	  -rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix=.fuzz/ .fuzz/corpus

clean:
	rm -rf $(VENV) build dist site src/*.egg-info
