#!/usr/bin/env bash
# Run the quickstart on the embedded PostgreSQL (or on $DATABASE_URL when set).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
.venv/bin/python examples/quickstart.py
