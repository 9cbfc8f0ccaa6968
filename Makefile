# The two set-up commands: `make demo` and `make test`. Both bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.core-installed
FULL := $(VENV)/.test-installed
# A real Arize Phoenix for the span-annotation tests (tests/phoenix_server.py), in a virtualenv
# of its own: its dependencies never meet the project's.
PHOENIX_VENV := .venv-phoenix
PHOENIX_VERSION := 20.26.1
PHOENIX := $(PHOENIX_VENV)/.installed-$(PHOENIX_VERSION)
NODE_PROJECTS := tests/node tests/instrumentation/vercel_ai

.PHONY: demo test lint typecheck bench fuzz system-deps phoenix clean

$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(CORE)

# Everything the suite runs against: dev tools, the optional extras (tested for real), the
# instrumentation libraries and agent frameworks, the Node SDKs, Phoenix, and Chromium for the
# HTML report test.
$(FULL): $(CORE) pyproject.toml $(foreach p,$(NODE_PROJECTS),$(p)/package-lock.json) | $(PHOENIX)
	# torch's CPU build first (a local wheel on this kind of machine), else pip takes a CUDA one.
	$(BIN)/python -m pip install -q 'torch==2.13.0'
	$(BIN)/python -m pip install -q -e '.[dev,fuzz,instrumentation-tests,agent-tests,autoevals,embeddings]'
	# No 0.66b2 release, and 0.66b1 pins the 0.66b1 series (see pyproject.toml's dev extra).
	$(BIN)/python -m pip install -q --no-deps 'opentelemetry-instrumentation-aiohttp-client==0.66b1'
	for p in $(NODE_PROJECTS); do npm --prefix $$p ci --no-audit --no-fund --loglevel=error || exit 1; done
	$(MAKE) system-deps
	touch $(FULL)

# Order-only above: (re)building Phoenix does not reinstall .venv, and a missing one (or a new
# PHOENIX_VERSION) is rebuilt.
$(PHOENIX):
	rm -rf $(PHOENIX_VENV)
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip install -q --upgrade pip
	$(PHOENIX_VENV)/bin/python -m pip install -q 'arize-phoenix==$(PHOENIX_VERSION)'
	touch $(PHOENIX)

phoenix: $(PHOENIX)

system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium is not installed; the HTML report test will be skipped"; fi; }

demo: $(CORE)
	$(BIN)/python examples/demo_app.py

test: $(FULL)
	$(BIN)/ruff check otel_online_eval tests examples benchmarks fuzz
	$(BIN)/mypy
	OE_REQUIRE_PHOENIX=1 $(BIN)/python -m pytest -q

lint: $(FULL)
	$(BIN)/ruff check otel_online_eval tests examples benchmarks fuzz
	$(BIN)/ruff format --check otel_online_eval tests examples benchmarks fuzz

typecheck: $(FULL)
	$(BIN)/mypy

bench: $(CORE)
	$(BIN)/python benchmarks/hotpath.py
	$(BIN)/python benchmarks/sidecar.py
	$(BIN)/python benchmarks/judge.py
	$(BIN)/python benchmarks/score.py

# A long coverage-guided run of the receivers' decode paths; crashing inputs go to fuzz/crashes/.
FUZZ_SECONDS ?= 600
fuzz: $(FULL)
	$(BIN)/python fuzz/ingest_fuzz.py -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=fuzz/crashes/ fuzz/corpus
	@if ls fuzz/crashes/* >/dev/null 2>&1; then echo "crashing inputs in fuzz/crashes/"; exit 1; fi

clean:
	rm -rf $(VENV) $(PHOENIX_VENV) build *.egg-info $(foreach p,$(NODE_PROJECTS),$(p)/node_modules)
