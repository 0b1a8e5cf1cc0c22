"""The benchmark suite still runs: its quick mode (seconds), results to a temp dir.

Benchmarks measure speed; this only proves the suite works end to end against the real
database and writes every section (it asserts nothing about timings).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the benchmark suite plots with matplotlib")
pytestmark = pytest.mark.extras

from rag_pgstore.testing import TestDatabase

ROOT = Path(__file__).parent.parent


def test_benchmark_suite_quick_mode(db: TestDatabase, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": db.url.render_as_string(hide_password=False),
        "BENCHMARK_RESULTS_DIR": str(tmp_path),
    }
    env.pop("BENCHMARK_PEERS_PYTHON", None)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.suite", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "benchmarks.md").read_text()
    assert "Command: `python -m benchmarks.suite --quick`" in text
    for section in ("## Targets", "## Ingest", "## Query latency", "## Recall@10", "## Chunker"):
        assert section in text
    for row in ("| raw psycopg COPY (binary), bare table |", "| ChunkStore.search |"):
        assert row in text
    assert (tmp_path / "benchmarks" / "ingest.png").stat().st_size > 1000
    assert (tmp_path / "benchmarks" / "latency.png").stat().st_size > 1000
