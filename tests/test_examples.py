"""Every script in examples/ runs, against the test database, and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag_pgstore.testing import TestDatabase as Database

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, db: Database) -> str:
    env = {**os.environ, "DATABASE_URL": db.url.render_as_string(hide_password=False)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart(db: Database) -> None:
    out = run_example("quickstart.py", db)
    assert "5 chunks in ChunkStore(collection='quickstart'" in out
    sections = out.split("\n? ")[1:]
    assert sections[0].splitlines()[1].split()[1] == "pgvector"
    assert sections[2].splitlines()[1].split()[1] == "bread"
    assert len(sections[2].splitlines()) == 2  # the cooking filter leaves one chunk


@pytest.mark.frameworks
def test_langchain_rag(db: Database) -> None:
    out = run_example("langchain_rag.py", db)
    sources = out.splitlines()[0]
    assert sources.startswith("sources: pgvector.md")
    assert "Question: How does pgvector find nearest neighbours?" in out
    assert "[pgvector.md] pgvector stores embeddings" in out


@pytest.mark.frameworks
def test_llamaindex_rag(db: Database) -> None:
    out = run_example("llamaindex_rag.py", db)
    assert out.splitlines()[0].startswith("source: pgvector.md")
    assert "Query: How does pgvector find nearest neighbours?" in out
    assert "pgvector stores embeddings in a vector column" in out
