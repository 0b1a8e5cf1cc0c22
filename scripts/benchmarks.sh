#!/usr/bin/env bash
# The full benchmark suite: docs/benchmarks.md and docs/benchmarks/*.png, in one run.
# The peers pin pgvector < 0.4, so they get their own virtualenv, .venv-peers (made once).
# Uses $DATABASE_URL when set, else the embedded server. Takes about 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
if [ ! -x .venv-peers/bin/python ]; then
    python3 -m venv .venv-peers
    .venv-peers/bin/pip install -q langchain-postgres llama-index-vector-stores-postgres numpy
fi
BENCHMARK_PEERS_PYTHON="$PWD/.venv-peers/bin/python" .venv/bin/python -m benchmarks.suite "$@"
