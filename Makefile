# Trainyard: `make demo` and `make test` are the two commands that matter.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: help venv demo test test-unit test-integration test-e2e test-slow bench bench-smoke bench-gpu schemas api-client up down clean console chromium

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*## /\t/' | expand -t 20

# torch is pinned to the 2.13.0 CPU wheel; constraints.txt pins the rest so that a fresh
# clone resolves to what was tested.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,postgres]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install Trainyard with its dev tools

demo: venv  ## start the local stack; train, sweep, promote and predict over HTTP; stop
	$(PY) examples/demo.py

test: venv chromium  ## run the whole test suite (unit, integration, e2e)
	$(PY) -m pytest tests -n 2 --dist loadfile --durations=50

test-unit: venv  ## unit tests only (no Ray)
	$(PY) -m pytest tests/unit

test-integration: venv
	$(PY) -m pytest tests/integration

test-e2e: venv chromium
	$(PY) -m pytest tests/e2e

test-slow: venv  ## the quality bars of every example spec (long)
	TRAINYARD_SLOW=1 $(PY) -m pytest -m slow tests

# benchmarks/_*.py are their shared helpers, not benchmarks
BENCHMARKS := $(filter-out benchmarks/_%,$(wildcard benchmarks/*.py))

bench: venv  ## every benchmark at full size, one JSON line each (holds the measurement lock; long; the GPU one: bench-gpu)
	for b in $(filter-out benchmarks/gpu_transformer.py,$(BENCHMARKS)); do $(PY) $$b || exit 1; done

bench-gpu: venv  ## the transformer at a GPT-2-small shape through Trainyard vs raw compiled torch, each ZeRO stage (needs a CUDA GPU)
	$(PY) benchmarks/gpu_transformer.py --stages auto,0,1,2,3

bench-smoke: venv  ## every benchmark at its --smoke size (seconds each): the JSON lines, no measurement
	for b in $(BENCHMARKS); do out=$$($(PY) $$b --smoke) || exit 1; echo "$$out" | tail -n 1; done

# The console's tests drive Debian's Chromium through Playwright (Playwright cannot fetch its own
# browser here); CI runs as root on Debian. Elsewhere, without root, the browser tests skip.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the console's browser tests will skip"; }

# The web console: console/ (Vite + Vue + ECharts) built into platform/trainyard/console/, which
# is committed, so that demo and test need no Node; tests/unit/test_console_build.py checks it.
console:  ## rebuild the web console's assets (needs Node 20 and npm)
	cd console && npm ci --no-audit --no-fund && npx vite build

schemas: venv  ## regenerate the checked-in JSON Schemas of the specs
	$(PY) -m trainyard.specs > platform/trainyard/schemas/specs.json

# console/openapi.json is the API's contract as committed; the console's TypeScript types are
# generated from it by openapi-typescript (pinned in console/package.json). Unit tests check both.
api-client: venv  ## regenerate console/openapi.json and the console's TypeScript API types (types: needs Node)
	$(PY) -m trainyard.api.openapi_doc > console/openapi.json
	cd console && npm ci --no-audit --no-fund && npm run -s api-types

up: venv
	$(VENV)/bin/trainyard up

down: venv
	$(VENV)/bin/trainyard down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
