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
    QueryTimeoutError,
    SchemaError,
)
from rag_pgstore.driver.policy import translate
from rag_pgstore.driver.steps import Execute, Fetch, Plan, Read
from rag_pgstore.sql.search import PSYCOPG
from rag_pgstore.sql.writes import set_local_many
from rag_pgstore.testing import TestDatabase as Database
from tests.conftest import StoreFactory, waiting_on_a_lock


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

    def writer(seed: int) -> tuple[int, set[int]]:
        rng = random.Random(seed)
        total, wrote = 0, set()
        for round_ in range(4):
            mine = rng.sample(ids, 1_500)  # overlapping sets, in different orders
            total += store.upsert(batch(mine, seed * 10 + round_))
            wrote.update(mine)
        return total, wrote

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(writer, range(4)))
    assert all(total > 0 for total, _ in results)
    written = set().union(*(wrote for _, wrote in results))
    assert store.count() == len(written)  # every id written is there, once
    assert {c.chunk_id for c in store.get([f"id{i}" for i in ids])} == {f"id{i}" for i in written}


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
        while not writing.done() and not waiting_on_a_lock(conn):
            threading.Event().wait(0.02)
        assert not writing.done()
        conn.commit()
        assert writing.result(timeout=30) == 2
    other.dispose()
    assert [(c.chunk_id, c.content) for c in store.get(["id1", "id2"])] == [
        ("id1", "round 7"),
        ("id2", "round 7"),
    ]


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


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_transaction_lost_to_a_deadlock_is_run_again(make_store: StoreFactory, mode: str) -> None:
    # We hold b and then want a; the other transaction holds a and then wants b. Our session
    # checks for deadlocks first (a shorter deadlock_timeout), so ours is the one aborted, and
    # the driver runs the plan again once the other is through.
    store = make_store()
    store.upsert(batch([1, 2], 0))
    table = store.collection.table
    assert store.engine is not None
    other = sa.create_engine(store.engine.url, poolclass=sa.NullPool)
    attempts = []

    def update(i: int) -> Execute:
        return Execute(table.update().where(table.c.chunk_id == f"id{i}").values(content="ours"))

    def plan() -> Plan[str]:
        attempts.append(1)
        yield Execute(set_local_many({"deadlock_timeout": "50ms"}))
        yield update(2)
        if len(attempts) == 1:
            holding.set()
            while not waiting_on_a_lock(conn):  # until the other waits for our b
                threading.Event().wait(0.02)
        yield update(1)
        return "done"

    holding = threading.Event()
    with ThreadPoolExecutor(1) as pool, other.connect() as conn:
        conn.execute(table.update().where(table.c.chunk_id == "id1").values(content="theirs"))
        if mode == "sync":
            ours = pool.submit(store.run_plan, plan)
        else:
            ours = pool.submit(lambda: asyncio.run(store.arun_plan(plan)))
        assert holding.wait(timeout=30)
        conn.execute(table.update().where(table.c.chunk_id == "id2").values(content="theirs"))
        conn.commit()
        assert ours.result(timeout=30) == "done"
    other.dispose()
    assert len(attempts) == 2
    assert [c.content for c in store.get(["id1", "id2"])] == ["ours", "ours"]


def test_setup_rebuilds_a_table_dropped_behind_its_back(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert(batch([1], 0))
    store.create_index()
    assert store.engine is not None
    with store.engine.begin() as conn:
        conn.execute(sa.schema.DropTable(store.collection.table))
    with pytest.raises(SchemaError, match="setup"):
        store.count()
    store.setup()
    assert store.count() == 0
    store.upsert(batch([1, 2], 0))
    assert store.create_index() is True  # the registry forgot the index that went with it
    assert len(store.search([1.0, 1.0, 0.0], k=2)) == 2


def test_a_statement_timeout_is_its_own_error_and_the_store_goes_on(
    db: Database, collection_name: str
) -> None:
    store = ChunkStore.from_url(
        db.url,
        collection=collection_name,
        dim=3,
        engine_options={"connect_args": {"options": "-c statement_timeout=200"}},
    )
    slow = sa.select(sa.func.pg_sleep(2))

    def sleep_in_a_transaction() -> Plan[object]:
        rows = yield Fetch(slow)
        return rows

    def sleep_alone() -> Plan[object]:
        compiled = slow.compile(dialect=PSYCOPG)
        rows = yield Read(str(compiled), dict(compiled.params))
        return rows

    for plan in (sleep_in_a_transaction, sleep_alone):
        with pytest.raises(QueryTimeoutError, match="statement timeout") as info:
            store.run_plan(plan())
        assert info.value.sqlstate == "57014"
        assert not isinstance(info.value, DatabaseUnavailableError)
        store.upsert(batch([1], 0))  # the pooled connection is still good
        assert store.count() == 1
    store.drop()
    store.close()


def test_database_errors_are_one_line_with_the_rest_in_attributes(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    table = store.collection.table
    row = {"chunk_id": "id1", "entity_id": "e", "content": "x", "content_hash": "h"}

    def insert_twice() -> Plan[None]:
        for _ in range(2):
            yield Execute(table.insert().values(embedding=[1.0, 0.0, 0.0], **row))

    with pytest.raises(DatabaseError) as info:
        store.run_plan(insert_twice())
    error = info.value
    assert "\n" not in str(error) and "INSERT" not in str(error)
    assert str(error).startswith("duplicate key value violates unique constraint")
    assert error.sqlstate == "23505" and "(SQLSTATE 23505)" in str(error)
    assert error.detail is not None and "already exists" in error.detail
    assert isinstance(error.__cause__, sa.exc.IntegrityError)
    assert store.count() == 0
