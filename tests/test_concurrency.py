"""Several writers on the same rows at once: threads, async tasks and processes, single-batch
and streamed writes, and setups racing on a fresh database. Every writer must succeed, the
last writer wins each row, and no row is lost or doubled."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from rag_pgstore import Chunk, ChunkStore
from rag_pgstore.connect import make_engines
from rag_pgstore.testing import TestDatabase as Database
from tests.conftest import StoreFactory, waiting_on_a_lock

IDS = [f"id{i:04d}" for i in range(600)]
DIM = 8


def texts(writer: int, round_: int, order: list[str]) -> list[str]:
    return [f"w{writer} r{round_} {chunk_id}" for chunk_id in order]


def order_for(writer: int) -> list[str]:
    return IDS if writer % 2 else IDS[::-1]  # half the writers go the other way


def assert_one_writer_won(store: ChunkStore) -> None:
    """Every id is there once, and all of them hold the text of one call: the last to commit."""
    rows = store.get(IDS)
    assert sorted(c.chunk_id for c in rows) == IDS
    assert store.count() == len(IDS)
    assert len({c.content.rsplit(" ", 1)[0] for c in rows}) == 1
    assert all(c.content.endswith(c.chunk_id) for c in rows)


@pytest.mark.frameworks
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "one-batch"])
def test_threads_writing_the_same_ids_in_any_order_all_succeed(
    make_store: StoreFactory, streamed: bool
) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from rag_pgstore.adapters.langchain import LangChainVectorStore

    store = make_store(dim=DIM)
    vs = LangChainVectorStore(
        store, embedding=DeterministicFakeEmbedding(size=DIM), embed_batch_size=150
    )

    def writer(n: int) -> None:
        for round_ in range(3):
            order = order_for(n)
            given = texts(n, round_, order)  # a list is embedded first; an iterator streams
            vs.add_texts(iter(given) if streamed else given, ids=order)

    with ThreadPoolExecutor(6) as pool:
        for future in [pool.submit(writer, n) for n in range(6)]:
            future.result()  # raises what a writer raised
    assert_one_writer_won(store)


def chunks(writer: int, round_: int) -> Iterator[Chunk]:
    for chunk_id, text in zip(
        order_for(writer), texts(writer, round_, order_for(writer)), strict=True
    ):
        yield Chunk(chunk_id=chunk_id, content=text, embedding=[1.0, float(writer), *[0.5] * 6])


async def test_async_tasks_streaming_the_same_ids_all_succeed(make_store: StoreFactory) -> None:
    store = make_store(dim=DIM)

    async def stream(n: int, round_: int) -> AsyncIterator[Chunk]:
        for chunk in chunks(n, round_):
            yield chunk

    async def writer(n: int) -> None:
        for round_ in range(3):
            if n % 3 == 0:
                await store.aupsert(list(chunks(n, round_)))  # one batch
            else:
                await store.aupsert(stream(n, round_), batch_size=100)  # six batches

    await asyncio.gather(*(writer(n) for n in range(6)))
    assert_one_writer_won(store)


def _process_writer(url: str, collection: str, n: int, start: Any, results: Any) -> None:
    try:
        store = ChunkStore(*make_engines(url), collection=collection, dim=DIM)
        start.wait(timeout=60)  # every process writes at the same moment
        for round_ in range(3):
            if n in (1, 2):  # two streams, in opposite orders
                store.upsert(chunks(n, round_), batch_size=120)  # five batches
            else:
                store.upsert(list(chunks(n, round_)))
            store.delete([f"gone{n}"])  # deletes share the write lock too
        store.engine.dispose()  # type: ignore[union-attr]
        results.put((n, "ok"))
    except Exception as exc:
        results.put((n, repr(exc)))


def in_processes(target: Any, args: list[tuple[Any, ...]]) -> list[tuple[int, str]]:
    """Run ``target(*a, start, results)`` for each ``a`` in its own process, started together."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(len(args)), ctx.Queue()
    workers = [ctx.Process(target=target, args=(*a, start, results)) for a in args]
    try:
        for worker in workers:
            worker.start()
        outcomes = sorted(results.get(timeout=120) for _ in workers)
        for worker in workers:
            worker.join(timeout=30)
        return outcomes
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()


def test_processes_writing_the_same_ids_all_succeed(db: Database, make_store: StoreFactory) -> None:
    store = make_store(dim=DIM)
    url = db.url.render_as_string(hide_password=False)
    outcomes = in_processes(_process_writer, [(url, store.collection.name, n) for n in range(4)])
    assert outcomes == [(n, "ok") for n in range(4)]
    assert_one_writer_won(store)


def _process_setup(url: str, schema: str, n: int, start: Any, results: Any) -> None:
    from rag_pgstore.ops import cache

    try:
        store = ChunkStore(*make_engines(url), collection=f"c{n}", dim=3, schema=schema)
        start.wait(timeout=60)  # every process sets up at the same moment
        store.setup()
        store.run_plan(cache.setup(schema))
        store.upsert([Chunk(chunk_id="x", content=f"setup {n}", embedding=[1.0, 0.0, 0.0])])
        store.engine.dispose()  # type: ignore[union-attr]
        results.put((n, "ok"))
    except Exception as exc:
        results.put((n, repr(exc)))


def test_setups_racing_on_a_fresh_database_all_succeed(db: Database) -> None:
    name = f"race_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(db.url, isolation_level="AUTOCOMMIT")
    try:
        _admin(admin, "CREATE DATABASE {}", name)
    except psycopg.errors.InsufficientPrivilege as exc:
        admin.dispose()
        pytest.skip(f"this test database role cannot CREATE DATABASE: {exc}")
    url = db.url.set(database=name).render_as_string(hide_password=False)
    try:
        outcomes = in_processes(_process_setup, [(url, "shared", n) for n in range(4)])
        assert outcomes == [(n, "ok") for n in range(4)]
        fresh = sa.create_engine(url)
        with fresh.connect() as conn:
            registered = conn.execute(
                sa.select(sa.func.count()).select_from(
                    sa.table("rag_pgstore_collections", schema="shared")
                )
            ).scalar_one()
        fresh.dispose()
        assert registered == 4
    finally:
        _admin(admin, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
        admin.dispose()


def _admin(engine: sa.Engine, statement: str, name: str) -> None:
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.execute(sql.SQL(statement).format(sql.Identifier(name)))


def test_a_setup_never_waits_behind_another_collections_index_build(
    make_store: StoreFactory,
) -> None:
    # An index build holds its collection's lock for minutes. A setup of that collection waits
    # for it; the setup of any other collection, and the embedding cache's, must not.
    from rag_pgstore.ops import cache
    from rag_pgstore.sql.writes import lock_key

    building = make_store()
    c = building.collection
    assert building.engine is not None
    other = sa.create_engine(building.engine.url, poolclass=sa.NullPool)
    with ThreadPoolExecutor(2) as pool, other.connect() as conn:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(f"{c.schema}.{c.name}"))))
        waiting = pool.submit(building.setup)
        while not waiting_on_a_lock(conn) and not waiting.done():
            threading.Event().wait(0.02)
        assert not waiting.done()
        fresh = pool.submit(lambda: make_store(dim=DIM))
        fresh.result(timeout=20).upsert(list(chunks(0, 0))[:3])  # set up while the other waits
        building.run_plan(cache.setup(c.schema))
        conn.commit()  # the "index build" ends
        waiting.result(timeout=20)
    other.dispose()


def test_deletes_and_upserts_of_the_same_ids_all_succeed(make_store: StoreFactory) -> None:
    # Deletes lock their rows in chunk_id order, as writes do; anything PostgreSQL still
    # aborts is run again. Nobody sees an error, and no id is there twice.
    store = make_store(dim=DIM)

    def writer(n: int) -> None:
        for round_ in range(4):
            store.upsert(list(chunks(n, round_)))

    def deleter(n: int) -> None:
        rng = random.Random(n)
        for _ in range(8):
            doomed = rng.sample(IDS, 200)
            store.delete(doomed if n % 2 else doomed[::-1])
            store.delete_where({"chunk_id": {"$in": rng.sample(IDS, 50)}})

    with ThreadPoolExecutor(6) as pool:
        jobs = [pool.submit(writer, n) for n in range(3)] + [
            pool.submit(deleter, n) for n in range(3)
        ]
        for job in jobs:
            job.result()
    rows = store.get(IDS)
    assert len(rows) == len({c.chunk_id for c in rows}) == store.count() <= len(IDS)
