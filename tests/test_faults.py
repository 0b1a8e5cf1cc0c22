"""Under load and faults: concurrent writers, reads during writes, restarts, lost servers."""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import sqlalchemy as sa

from rag_pgstore import (
    Chunk,
    ChunkStore,
    DatabaseError,
    DatabaseUnavailableError,
    SchemaError,
)
from rag_pgstore.steps import translate
from rag_pgstore.testing import TestDatabase as Database
from tests.conftest import StoreFactory


def batch(ids: list[int], round_: int) -> list[Chunk]:
    return [
        Chunk(
            chunk_id=f"id{i}",
            content=f"round {round_}",
            embedding=[1.0, float(i % 5), float(round_)],
        )
        for i in ids
    ]


def test_concurrent_overlapping_upserts_do_not_deadlock(make_store: StoreFactory) -> None:
    store = make_store()
    ids = list(range(2_000))

    def writer(seed: int) -> int:
        rng = random.Random(seed)
        total = 0
        for round_ in range(4):
            mine = rng.sample(ids, 1_500)  # overlapping sets, in different orders
            total += store.upsert(batch(mine, seed * 10 + round_))
        return total

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(writer, range(4)))
    assert all(r > 0 for r in results)
    assert store.count() == len(
        {f"id{i}" for i in ids} & {c.chunk_id for c in store.get([f"id{i}" for i in ids])}
    )


async def test_concurrent_async_upserts_do_not_deadlock(make_store: StoreFactory) -> None:
    store = make_store()
    ids = list(range(1_000))
    rounds = [random.Random(s).sample(ids, 800) for s in range(6)]
    written = await asyncio.gather(*(store.aupsert(batch(r, n)) for n, r in enumerate(rounds)))
    assert sum(written) >= 800
    assert await store.acount() == len(set().union(*rounds))


def test_a_new_id_written_meanwhile_sends_the_batch_to_the_merge(
    make_store: StoreFactory,
) -> None:
    # Another transaction inserts id1 after our existence check: our COPY waits for it, hits
    # the unique index once it commits, rolls back to its savepoint, and merges instead.
    store = make_store()
    table = store.collection.table
    assert store.engine is not None
    other = sa.create_engine(store.engine.url, poolclass=sa.NullPool)
    with ThreadPoolExecutor(1) as pool, other.connect() as conn:
        row = {"chunk_id": "id1", "entity_id": "id1", "content": "theirs"}
        conn.execute(table.insert().values(embedding=[0.0, 0.0, 1.0], content_hash="x", **row))
        writing = pool.submit(store.upsert, batch([1, 2], 7))
        while not writing.done() and not _waiting_on_a_lock(conn):
            threading.Event().wait(0.02)
        assert not writing.done()
        conn.commit()
        assert writing.result(timeout=30) == 2
    other.dispose()
    assert [(c.chunk_id, c.content) for c in store.get(["id1", "id2"])] == [
        ("id1", "round 7"),
        ("id2", "round 7"),
    ]


def _waiting_on_a_lock(conn: sa.Connection) -> bool:
    waits = (
        sa.select(sa.func.count())
        .select_from(sa.table("pg_stat_activity"))
        .where(
            sa.column("wait_event_type") == "Lock",
            sa.column("datname") == sa.func.current_database(),
        )
    )
    with conn.engine.connect() as probe:
        return bool(probe.execute(waits).scalar_one())


def test_searches_keep_working_while_writes_run(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(batch(list(range(500)), 0))
    stop = threading.Event()
    writes = 0

    def write() -> None:
        nonlocal writes
        round_ = 1
        while not stop.is_set():
            store.upsert(batch(list(range(500)), round_))
            round_ += 1
            writes += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(50):
            hits = store.search([1.0, 2.0, 0.0], k=5)
            assert len(hits) == 5
    finally:
        stop.set()
        thread.join()
    assert writes >= 1


async def test_store_survives_a_server_restart(db: Database, make_store: StoreFactory) -> None:
    if db.restart is None:
        pytest.skip(f"restart needs the embedded server; this run uses {db.source}")
    store = make_store()
    store.upsert(batch([1, 2, 3], 0))
    assert len(store.search([1.0, 1.0, 0.0], k=3)) == 3  # pools now hold a live connection
    assert await store.acount() == 3
    assert len(await store.asearch([1.0, 1.0, 0.0], k=3)) == 3
    db.restart()
    # Pooled connections are dead; the first statement finds out, the pool is emptied and the
    # statement runs again on a new connection, without the user's help.
    assert len(store.search([1.0, 1.0, 0.0], k=3)) == 3
    assert await store.acount() == 3
    db.restart()
    assert len(await store.asearch([1.0, 1.0, 0.0], k=3)) == 3  # a Read first, this time
    assert store.count() == 3
    db.restart()
    store.upsert(batch([4], 0))  # a write (its first step asks which ids exist)
    assert store.count() == 4


def test_killed_backends_are_replaced(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(batch([1, 2], 0))
    assert store.count() == 2
    assert store.engine is not None
    killer = sa.create_engine(store.engine.url)
    with killer.begin() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        )
    killer.dispose()
    assert store.count() == 2
    assert len(store.search([1.0, 1.0, 0.0], k=2)) == 2


def test_unreachable_server_is_a_typed_error_without_the_password(collection_name: str) -> None:
    with pytest.raises(DatabaseUnavailableError) as info:
        ChunkStore.from_url(
            "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2",
            collection=collection_name,
            dim=3,
        )
    assert "s3cret-pw" not in str(info.value)
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)


def test_translate_keeps_sqlstate_and_classifies() -> None:
    deadlock = psycopg.errors.DeadlockDetected("deadlock detected")
    assert translate(deadlock).__class__ is DatabaseError
    assert isinstance(
        translate(psycopg.OperationalError("server closed the connection")),
        DatabaseUnavailableError,
    )
    assert isinstance(translate(psycopg.errors.UndefinedTable("relation missing")), SchemaError)
    assert isinstance(
        translate(psycopg.errors.AdminShutdown("terminating")), DatabaseUnavailableError
    )
