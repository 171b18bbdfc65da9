#!/usr/bin/env bash
# perf_analyzer sweeps for every model with a load-test case, dynamic batching on and off.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHONPATH=$(pwd) exec .venv/bin/python -m benchmarks.triton.perf --batching both --concurrency "${CONCURRENCY:-1:4}" "$@"
