#!/usr/bin/env bash
# Run the whole test suite: lint, strict typing, then pytest against a real PostgreSQL.
# Extra arguments go to pytest (e.g. scripts/test.sh -k filters).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
