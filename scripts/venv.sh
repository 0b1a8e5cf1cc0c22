# Sourced by the other scripts: create .venv and install the project into it, once per change
# of pyproject.toml.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "Installing rag-pgstore and its dependencies into .venv (first run, or pyproject.toml" \
    "changed): about 3-6 minutes, most of it the CPU build of torch for the local model." >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # The local embedding model needs torch; pinning it first takes the CPU build this machine
  # carries instead of letting sentence-transformers pull the newest (CUDA) one.
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
  touch "$stamp"
fi
