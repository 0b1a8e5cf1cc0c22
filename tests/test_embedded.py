"""The zero-setup default: an embedded PostgreSQL that persists across runs and stops cleanly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rag_pgstore import Chunk, ChunkStore, EmbeddedServerError, embedded
from rag_pgstore.testing import TestDatabase

SCRIPT = textwrap.dedent(
    """
    import sys
    from rag_pgstore import Chunk, ChunkStore
    store = ChunkStore.from_url(None, collection="persist", dim=2, data_dir=sys.argv[1])
    if sys.argv[2] == "write":
        store.upsert([Chunk(chunk_id="kept", content="across runs", embedding=[1.0, 0.0])])
    print(store.count(), [c.content for c in store.get(["kept"])])
    print(repr(store))
    """
)


def run(data_dir: Path, mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data_dir), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_data_survives_runs_and_the_server_stops_with_the_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    assert run(data_dir, "write").startswith("1 ['across runs']")
    assert not (data_dir / "postmaster.pid").exists()  # stopped when the process exited
    second = run(data_dir, "read")
    assert second.startswith("1 ['across runs']")
    assert "postgresql+psycopg://postgres:***@" in second
    assert not (data_dir / "postmaster.pid").exists()


def test_default_data_dir_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAG_PGSTORE_DATA_DIR", str(tmp_path / "here"))
    assert embedded.default_data_dir() == tmp_path / "here"
    monkeypatch.delenv("RAG_PGSTORE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert embedded.default_data_dir() == tmp_path / "xdg" / "rag-pgstore" / "pg"


def test_unusable_data_dir_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EmbeddedServerError, match="could not start"):
        embedded.start(blocker / "pg")


async def test_afrom_url_sets_up_on_the_async_engine(
    db: TestDatabase, collection_name: str
) -> None:
    store = await ChunkStore.afrom_url(db.url, collection=collection_name, dim=2)
    try:
        await store.aupsert([Chunk(chunk_id="a", content="x", embedding=[0.0, 1.0])])
        assert await store.acount() == 1
    finally:
        await store.aclose()
