# The two commands of the README:
#   make run    set everything up (venv, packages, model files), build the index, start the chat UI
#   make test   set everything up, plus Chromium and PostgreSQL for the tests, then ruff, mypy and pytest
# Both are idempotent: a second run skips what is already there.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# llama.cpp must not be built for the build machine's exact CPU: the native build crashed with
# "Illegal instruction" on these machines (see ../shared/STACK.md).
export CMAKE_ARGS := -DGGML_NATIVE=OFF
export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export ANONYMIZED_TELEMETRY := False
export PIP_DISABLE_PIP_VERSION_CHECK := 1

DEPS_STAMP := $(VENV)/.deps-$(shell cat pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)

.PHONY: run test setup models browser postgres lint typecheck markers pytest bench eval clean

run: setup
	$(BIN)/coach serve

test: setup browser postgres lint typecheck markers pytest

setup: $(DEPS_STAMP) models

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEPS_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing Python packages (llama-cpp-python compiles once, about 6 minutes) ..."
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.deps-*
	touch $@

models: $(DEPS_STAMP)
	$(BIN)/coach models install

# Debian packages for the tests, installed once (sudo unless root): $(APT_INSTALL) PACKAGE...
APT_INSTALL = SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq

# Debian's Chromium for the Playwright tests (never `playwright install`: it downloads a browser).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium from Debian ..."; \
	  $(APT_INSTALL) chromium chromium-driver >/dev/null; \
	fi
	@/usr/bin/chromium --version

# Debian's PostgreSQL for the test of several instances sharing one database (the test runs its own server,
# as the `postgres` user when run as root, in a temporary folder; no system service is needed).
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  echo "installing postgresql from Debian ..."; \
	  $(APT_INSTALL) postgresql >/dev/null; \
	fi
	@ls /usr/lib/postgresql/*/bin/postgres

lint:
	$(BIN)/ruff check src tests bench app.py

typecheck:
	$(BIN)/mypy src

# The markers tell the truth: the unit tests run in a copy of the project that has no model files at all.
markers:
	@tmp=$$(mktemp -d) && \
	  tar -cf - --exclude=./.venv --exclude=./models --exclude=./data --exclude=./.git . | tar -xf - -C $$tmp && \
	  cd $$tmp && $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration and not model"; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

pytest:
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/index_bench.py
	$(BIN)/python bench/answer_bench.py
	$(BIN)/python bench/plan_bench.py

# A bounded load test of a real `coach serve` on loopback (stops by itself): 30 sessions on the extractive backend
# for 2 minutes, then 4 on the local model for 1 minute; requests/s, latency p50/p95/p99, errors by kind.
.PHONY: load
load: setup
	$(BIN)/python bench/load_bench.py --backend extractive
	$(BIN)/python bench/load_bench.py --backend local

# Issue 13's figures (stops by itself): 1, 2, 4 and 8 conversations at once on the local model through the API, for
# the lock of 77fb04f (a git worktree), then this tree's scheduler with COACH_BATCHING=exact and =fused, each its own
# `coach serve` in turn; first text and whole answer p50/p95, aggregate tok/s, errors; bench/results/concurrency.json.
.PHONY: concurrency
concurrency: setup
	$(BIN)/python bench/concurrency_bench.py

EVAL_SETS ?= $(wildcard ../shared/eval/*.jsonl) bench/extra_questions.jsonl

eval: setup
	$(BIN)/coach eval $(EVAL_SETS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
