"""Bulk loads: rows first, the secondary indexes once at the end, all in one transaction."""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from rag_pgstore import (
    Chunk,
    ChunkStore,
    DatabaseError,
    DimensionError,
    HnswIndex,
    InvalidInputError,
)
from rag_pgstore.sql.writes import raise_settings
from tests.conftest import Api, StoreFactory, waiting_on_a_lock


def vector(i: int) -> list[float]:
    angle = i * 0.01
    return [math.cos(angle), math.sin(angle), 0.1 + (i % 7) / 10]


def chunk(i: int, **kw: Any) -> Chunk:
    kw.setdefault("content", f"entry {i} about {'postgres' if i % 2 else 'vectors'}")
    return Chunk(
        chunk_id=f"c{i:05d}",
        entity_id=f"doc{i // 10}",
        chunk_index=i % 10,
        metadata={"n": i, "even": i % 2 == 0},
        embedding=vector(i),
        **kw,
    )


def index_definitions(store: ChunkStore) -> dict[str, str]:
    assert store.engine is not None
    c = store.collection
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = :schema AND tablename = :table"
            ),
            {"schema": c.schema, "table": c.name},
        )
        return {name: definition for name, definition in rows}


def invalid_indexes(store: ChunkStore) -> list[str]:
    assert store.engine is not None
    c = store.collection
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT indexrelid::regclass::text FROM pg_index "
                "WHERE indrelid = to_regclass(:table) AND NOT (indisvalid AND indisready)"
            ),
            {"table": f"{c.schema}.{c.name}"},
        )
        return [name for (name,) in rows]


async def test_bulk_load_builds_the_same_indexes_and_finds_the_same_rows(
    make_store: StoreFactory, api: Api
) -> None:
    bulk, plain = make_store(), make_store()
    for store in (bulk, plain):
        store.create_index(HnswIndex(m=8, ef_construction=32))
    before = index_definitions(bulk)
    rows = [chunk(i) for i in range(1_200)]
    assert await api(bulk, "bulk_load", iter(rows), batch_size=500, parallel_workers=1) == 1_200
    plain.upsert(rows)
    after = index_definitions(bulk)
    assert after == before  # the same names and definitions, built again
    assert bulk.count() == plain.count() == 1_200
    assert invalid_indexes(bulk) == []
    query = vector(321)
    assert [h.chunk.chunk_id for h in bulk.search(query, k=5)] == [
        h.chunk.chunk_id for h in plain.search(query, k=5)
    ]
    assert [h.chunk.chunk_id for h in bulk.text_search("postgres entry 77", k=3)] == [
        h.chunk.chunk_id for h in plain.text_search("postgres entry 77", k=3)
    ]
    assert {c.chunk_id for c in bulk.get_where({"n": {"$lt": 3}})} == {"c00000", "c00001", "c00002"}


async def test_bulk_load_replaces_existing_rows_like_upsert(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store()
    store.upsert([chunk(i) for i in range(10)])
    changed = await api(
        store, "bulk_load", [chunk(i, content=f"new {i}") for i in range(5, 15)], batch_size=4
    )
    assert changed == 10
    assert store.count() == 15
    assert [c.content for c in store.get(["c00004", "c00005"])] == [
        chunk(4).content,
        "new 5",
    ]


async def test_a_failed_bulk_load_leaves_rows_and_indexes_as_they_were(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store()
    store.create_index()
    store.upsert([chunk(i) for i in range(3)])
    before = index_definitions(store)

    def stream() -> Iterator[Chunk]:
        yield from (chunk(i) for i in range(3, 30))
        yield Chunk(chunk_id="bad", content="x", embedding=[1.0])  # wrong dimension

    with pytest.raises(DimensionError):
        await api(store, "bulk_load", stream(), batch_size=10)
    assert store.count() == 3
    assert index_definitions(store) == before

    # A failure in the server, after the rows are in and while an index is being built.
    assert store.engine is not None
    table = store.collection.table
    with store.engine.begin() as conn:
        conn.execute(
            sa.schema.AddConstraint(
                sa.CheckConstraint(
                    table.c.content != "boom", name=f"{table.name}_no_boom", table=table
                )
            )
        )
    with pytest.raises(DatabaseError):
        await api(store, "bulk_load", [chunk(50), chunk(51, content="boom")])
    assert store.count() == 3
    assert index_definitions(store) == before


async def test_require_empty_refuses_a_collection_with_chunks(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store()
    assert await api(store, "bulk_load", [chunk(1)], require_empty=True) == 1
    with pytest.raises(InvalidInputError, match="expected collection .* to be empty"):
        await api(store, "bulk_load", [chunk(2)], require_empty=True)
    assert store.count() == 1


@pytest.mark.parametrize(
    "options",
    [
        {"maintenance_work_mem": "lots"},
        {"maintenance_work_mem": "1gb"},
        {"maintenance_work_mem": "512kB"},
        {"maintenance_work_mem": "4TB"},
        {"maintenance_work_mem": 1024},
        {"parallel_workers": -1},
        {"parallel_workers": True},
        {"parallel_workers": 2.0},
        {"batch_size": 0},
    ],
)
def test_bad_bulk_options_are_refused_before_anything_runs(
    make_store: StoreFactory, options: dict[str, Any]
) -> None:
    store = make_store()
    with pytest.raises(InvalidInputError, match="expected"):
        store.bulk_load([chunk(1)], **options)
    assert store.count() == 0


def test_maintenance_memory_is_raised_never_lowered(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.engine is not None
    with store.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
        conn.execute(raise_settings({"maintenance_work_mem": "1MB"}))
        assert conn.execute(sa.text("SHOW maintenance_work_mem")).scalar_one() == "256MB"
        conn.execute(raise_settings({"maintenance_work_mem": "1GB"}))
        assert conn.execute(sa.text("SHOW maintenance_work_mem")).scalar_one() == "1GB"
    with store.engine.connect() as conn:  # local to the transaction: gone after it
        assert conn.execute(sa.text("SHOW maintenance_work_mem")).scalar_one() != "1GB"
    assert store.bulk_load([chunk(i) for i in range(20)], maintenance_work_mem="1MB") == 20


async def test_an_async_stream_bulk_loads(make_store: StoreFactory) -> None:
    store = make_store()

    async def rows() -> AsyncIterator[Chunk]:
        for i in range(25):
            yield chunk(i)

    assert await store.abulk_load(rows(), batch_size=10) == 25
    assert store.count() == 25


def reader_during(store: ChunkStore, write: Any) -> tuple[bool, int]:
    """Run ``write(rows)`` while a reader counts the collection after the first rows are
    written: whether the reader had to wait for the writer, and the count it got."""
    assert store.engine is not None
    engine = store.engine
    counts: list[int] = []
    written = threading.Event()
    waited: list[bool] = []

    def rows() -> Iterator[Chunk]:
        yield from (chunk(i) for i in range(1, 40))
        written.set()
        with engine.connect() as conn:
            for _ in range(100):  # up to 2 s for the reader to start waiting, or to finish
                if counts or waiting_on_a_lock(conn):
                    break
                threading.Event().wait(0.02)
            waited.append(not counts)

    def read() -> None:
        written.wait()
        counts.append(store.count())

    reader = threading.Thread(target=read)
    reader.start()
    write(rows())
    reader.join()
    return waited[0], counts[0]


def test_readers_wait_for_a_bulk_load_and_see_all_of_it(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert([chunk(0)])
    assert reader_during(store, lambda rows: store.bulk_load(rows, batch_size=10)) == (True, 40)


def test_a_stream_into_an_empty_collection_is_loaded_in_bulk(make_store: StoreFactory) -> None:
    store = make_store()
    store.create_index()
    c = store.collection
    # Into an empty collection: written like a bulk load (readers wait), indexes at the end.
    assert reader_during(store, lambda rows: store.upsert(rows, batch_size=10)) == (True, 39)
    assert set(index_definitions(store)) >= {c.index_name, c.tsv_index_name}
    assert invalid_indexes(store) == []
    # Into a collection holding more than a batch: incremental, readers see the last commit.
    store.upsert([chunk(i) for i in range(100, 120)])
    assert reader_during(store, lambda rows: store.upsert(rows, batch_size=10)) == (False, 59)
