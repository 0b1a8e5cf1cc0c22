"""The rag-pgstore command end to end: ingest a folder, search it, stats, doctor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tiktoken", reason="the CLI chunks with tiktoken")
pytestmark = pytest.mark.extras

from rag_pgstore.testing import TestDatabase


def cli(db: TestDatabase, collection: str, *args: str) -> subprocess.CompletedProcess[str]:
    url = db.url.render_as_string(hide_password=False)
    command = [
        sys.executable,
        "-m",
        "rag_pgstore.cli",
        args[0],
        "--database-url",
        url,
        "--collection",
        collection,
        "--embedder",
        "hash",
        "--dim",
        "64",
        *args[1:],
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_ingest_search_stats_doctor(db: TestDatabase, collection_name: str, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text(
        '# Filters\n\nMetadata filters use dicts like {"topic": "db"}.\n'
    )
    (tmp_path / "sub" / "b.txt").write_text("Bread needs flour, water and salt.\n\nBake it hot.")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    ingest = cli(db, collection_name, "ingest", str(tmp_path), "--json")
    assert ingest.returncode == 0, ingest.stderr
    report = json.loads(ingest.stdout)
    assert report["files"] == 2 and report["documents"] == 2 and report["chunks_written"] >= 2
    again = json.loads(
        cli(
            db,
            collection_name,
            "ingest",
            str(tmp_path / "**" / "*.txt"),
            str(tmp_path / "a.md"),
            "--json",
        ).stdout
    )
    assert again["unchanged"] == 2 and again["embedded"] == 0

    found = cli(db, collection_name, "search", "flour and water", "-k", "1", "--json")
    assert found.returncode == 0, found.stderr
    (hit,) = json.loads(found.stdout)
    assert hit["source"].endswith("sub/b.txt") and "flour" in hit["text"]
    filtered = json.loads(
        cli(
            db,
            collection_name,
            "search",
            "flour",
            "--hybrid",
            "--filter",
            '{"source": {"$like": "%a.md"}}',
            "--json",
        ).stdout
    )
    assert [h["source"].endswith("a.md") for h in filtered] == [True]
    table = cli(db, collection_name, "search", "flour and water", "-k", "1")
    assert "sub/b.txt" in table.stdout and table.stdout.startswith("? flour and water")

    stats = json.loads(cli(db, collection_name, "stats", "--json").stdout)
    assert stats["documents"] == 2 and stats["dim"] == 64 and stats["schema_version"] == 2
    doctor = json.loads(cli(db, collection_name, "doctor", "--json").stdout)
    assert doctor["pgvector"] and doctor["server"]
    assert doctor["uses_ann_index"] is False  # no ANN index yet: an exact scan
    assert any(node.startswith("Seq Scan") for node in doctor["vector_search_plan"])
    assert f"{collection_name}_tsv_gin" in doctor["indexes"]


def test_errors_are_one_clear_line(db: TestDatabase, collection_name: str, tmp_path: Path) -> None:
    missing = cli(db, collection_name, "ingest", str(tmp_path / "nothing-*.md"))
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("rag-pgstore: expected files at")
    bad_filter = cli(db, collection_name, "search", "x", "--filter", '{"a": {"$regex": "y"}}')
    assert bad_filter.returncode == 1 and "$regex" in bad_filter.stderr


def test_main_job_answers_questions_about_the_docs_with_the_local_model(
    db: TestDatabase, collection_name: str
) -> None:
    root = Path(__file__).parent.parent
    url = db.url.render_as_string(hide_password=False)
    base = [sys.executable, "-m", "rag_pgstore.cli"]
    common = ["--database-url", url, "--collection", collection_name, "--embedder", "local"]
    ingest = subprocess.run(
        [*base, "ingest", str(root / "docs"), str(root / "README.md"), *common, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["chunks_written"] > 10
    asked = subprocess.run(
        [
            *base,
            "search",
            "Which fusion does hybrid search use by default?",
            "-k",
            "3",
            "--hybrid",
            *common,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert asked.returncode == 0, asked.stderr
    hits = json.loads(asked.stdout)
    assert hits[0]["source"].endswith("docs/guide.md")
    assert "fus" in hits[0]["text"].lower()
