# Doppel: `make up` starts the whole platform locally, `make test` runs the tests.
# Both install whatever is missing first (scripts/bootstrap.sh).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install up down status test bench quality lint key

install:
	@bash scripts/bootstrap.sh

up: install
	@$(PY) -m doppel up

down:
	@if [ -x $(PY) ]; then $(PY) -m doppel down; else echo "nothing to stop (no virtualenv)"; fi

status:
	@$(PY) -m doppel status

key: ## make key TENANT=acme
	@$(PY) -m doppel keys create --tenant "$(or $(TENANT),default)"

test: install
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	@$(PY) -m pytest benchmarks --benchmark-only $(PYTEST_ARGS)
	@bash benchmarks/triton/run_perf.sh
	@OMP_NUM_THREADS=1 $(PY) -m benchmarks.e2e.video_rtf
	@OMP_NUM_THREADS=1 $(PY) -m benchmarks.live

quality: install ## full-size quality runs on real data: results in benchmarks/results/
	@OMP_NUM_THREADS=1 $(PY) -m benchmarks.quality.mouth
	@OMP_NUM_THREADS=1 $(PY) -m benchmarks.quality.voice
	@OMP_NUM_THREADS=1 $(PY) -m benchmarks.quality.talking_head

lint: install
	@$(PY) -m ruff format --check doppel api orchestrator export tests benchmarks model_repository
	@$(PY) -m mypy
	@.venv/bin/lint-imports
	@$(PY) -m ruff check doppel api orchestrator export tests benchmarks model_repository
	@cd web && npm run --silent lint && npm run --silent typecheck
