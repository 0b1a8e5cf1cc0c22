#!/usr/bin/env bash
# The main job: ingest the project's own docs with the local model into the embedded Postgres
# (or $DATABASE_URL), then answer a few questions, printing the top chunks, sources and scores.
# It uses the default collection, so `rag-pgstore search "..."` afterwards searches the same.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
rag=.venv/bin/rag-pgstore
"$rag" ingest docs README.md
for question in \
  "How do I filter search results by metadata?" \
  "What happens when a document gets shorter and is ingested again?" \
  "Which fusion does hybrid search use by default?"; do
  echo
  "$rag" search "$question" -k 3 --hybrid
done
echo
echo "Ask your own: .venv/bin/rag-pgstore search \"...\" --hybrid   (collections, stats, doctor: --help)"
