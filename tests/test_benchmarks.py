"""The benchmarks still run: each in a quick mode of a few seconds, results to a temp dir.

Benchmarks measure speed; this only proves they work (it asserts nothing about timings).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag_pgstore.testing import TestDatabase

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(
    ("module", "args", "rows"),
    [
        (
            "ingest_quick",
            ["--rows", "300", "--dim", "16", "--repeat", "1"],
            ["raw COPY, bare table", "ChunkStore.upsert"],
        ),
        (
            "chunker_speed",
            ["--megabytes", "0.05", "--repeat", "1"],
            ["tiktoken encode_ordinary", "TokenChunker.spans"],
        ),
    ],
)
def test_benchmark_quick_mode(
    db: TestDatabase, tmp_path: Path, module: str, args: list[str], rows: list[str]
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": db.url.render_as_string(hide_password=False),
        "BENCHMARK_RESULTS_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (page,) = tmp_path.glob("*.md")
    text = page.read_text()
    assert f"Command: `python -m benchmarks.{module} {' '.join(args)}`" in text
    for row in rows:
        assert f"| {row} |" in text
