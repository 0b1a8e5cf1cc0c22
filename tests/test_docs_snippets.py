"""Every Python snippet in README.md and docs/ runs as written.

The snippets of one page run in order, as one script, in a fresh process on the embedded
server (a data folder of this test's own, as a reader without a database would have it), twice:
a reader who runs a page again must get the same collections, not a second copy of the data.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tiktoken", reason="the snippets chunk with tiktoken")
pytest.importorskip("langchain_core", reason="the snippets use LangChain")
pytest.importorskip("llama_index.core", reason="the snippets use LlamaIndex")
pytest.importorskip("sentence_transformers", reason="the snippets use the local model")
pytestmark = [pytest.mark.extras, pytest.mark.frameworks]

from rag_pgstore import ChunkStore

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text())


def test_the_pages_have_snippets() -> None:
    with_code = [p.name for p in PAGES if snippets(p)]
    assert {"README.md", "langchain.md", "llamaindex.md", "pipeline.md"} <= set(with_code)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rag_pgstore import embedded

    path = tmp_path_factory.mktemp("snippets") / "pg"
    embedded.start(path)  # kept running by this process, so each script reuses it
    return path


def counts(data_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        c.name: (c.chunks, c.entities) for c in ChunkStore.list_collections(None, data_dir=data_dir)
    }


@pytest.mark.parametrize("page", [p for p in PAGES if snippets(p)], ids=lambda p: p.name)
def test_snippets_run_as_written(page: Path, data_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / f"{page.stem}.py"
    script.write_text("\n\n".join(snippets(page)))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["RAG_PGSTORE_DATA_DIR"] = str(data_dir)
    seen = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env=env,
        )
        assert done.returncode == 0, f"{page.name}:\n{done.stderr[-3000:]}"
        seen.append(counts(data_dir))
    assert seen[0] == seen[1], f"running {page.name} again changed the data"
