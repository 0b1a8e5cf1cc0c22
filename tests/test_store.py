"""Writes, reads and deletes against the real database, through the sync and the async API."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from rag_pgstore import (
    Chunk,
    ChunkStore,
    CollectionNotFoundError,
    DatabaseError,
    DimensionError,
    InvalidInputError,
    SchemaError,
    UnsupportedError,
)
from tests.conftest import Api, StoreFactory


def chunk(cid: str, vec: list[float] | None = None, **kw: Any) -> Chunk:
    kw.setdefault("content", f"content of {cid}")
    return Chunk(chunk_id=cid, embedding=vec or [1.0, 0.0, 0.0], **kw)


async def test_round_trip_keeps_every_field(make_store: StoreFactory, api: Api) -> None:
    store = make_store()
    meta = {
        "source": "a.md",
        "nested": {"k": [1, 2.5, None, "x"]},
        "id": "user-id",
        "entity_id": "mine",
    }
    written = [
        chunk(
            "doc-1#0",
            [0.25, -1.5, 3.0],
            entity_id="doc-1",
            chunk_index=0,
            total_chunks=2,
            content="Hello, wörld 🌍",
            metadata=meta,
        ),
        chunk("doc-1#1", [1.0, 2.0, 3.0], entity_id="doc-1", chunk_index=1, total_chunks=2),
        chunk("solo"),
    ]
    assert await api(store, "upsert", written) == 3
    got = await api(store, "get", ["solo", "doc-1#1", "doc-1#0", "missing"], with_embeddings=True)
    assert [c.chunk_id for c in got] == ["doc-1#0", "doc-1#1", "solo"]
    first = got[0]
    assert (first.entity_id, first.chunk_index, first.total_chunks) == ("doc-1", 0, 2)
    assert first.content == "Hello, wörld 🌍"
    assert first.metadata == meta
    assert first.embedding == [0.25, -1.5, 3.0]
    assert first.content_hash == hashlib.sha256("Hello, wörld 🌍".encode()).hexdigest()
    assert got[2].entity_id == "solo"  # entity defaults to the chunk id
    assert got[2].metadata == {}
    without = await api(store, "get", ["solo"])
    assert without[0].embedding is None


async def test_upsert_is_a_full_replace_and_skips_unchanged_rows(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store()
    await api(store, "upsert", [chunk("a", entity_id="e1", metadata={"x": 1, "y": 2})])
    (before,) = store.get(["a"])
    assert await api(store, "upsert", [chunk("a", entity_id="e1", metadata={"x": 1, "y": 2})]) == 0
    (same,) = store.get(["a"])
    assert same.updated_at == before.updated_at
    assert await api(store, "upsert", [chunk("a", entity_id="e2", metadata={"x": 3})]) == 1
    (after,) = store.get(["a"])
    assert (after.entity_id, after.metadata) == ("e2", {"x": 3})
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at


async def test_duplicate_ids_in_one_call_last_one_wins(make_store: StoreFactory, api: Api) -> None:
    store = make_store()
    batch = [
        chunk("x", content="first"),
        chunk("y"),
        chunk("x", content="second"),
        chunk("x", content="last"),
    ]
    assert await api(store, "upsert", batch) == 2
    (x,) = store.get(["x"])
    assert x.content == "last"
    assert store.count() == 2


async def test_a_stream_is_written_batch_after_batch(make_store: StoreFactory, api: Api) -> None:
    # Batches of two: {x, y} are new (copied in), {x, z} replaces x (merged), {x} again.
    store = make_store()
    stream = iter([chunk("x", content="1"), chunk("y"), chunk("x", content="2"), chunk("z")])
    tail = [chunk("x", content="3"), chunk("y")]
    assert await api(store, "upsert", itertools.chain(stream, tail), batch_size=2) == 5
    assert [(c.chunk_id, c.content) for c in store.get(["x", "y", "z"])] == [
        ("x", "3"),
        ("y", "content of y"),
        ("z", "content of z"),
    ]


async def test_a_stream_into_an_empty_table_that_repeats_an_id_late(
    make_store: StoreFactory, api: Api
) -> None:
    # Into an empty table, batches are copied without asking the table first: the only ids
    # that can be there are the stream's own. Three clean batches, then one repeating an id
    # of the first rolls back to its savepoint and merges; the batches after it are checked.
    store = make_store()
    stream = [chunk(f"n{i}") for i in range(6)]
    stream += [chunk("n0", content="again"), chunk("n6"), chunk("n7"), chunk("n8")]
    assert await api(store, "upsert", iter(stream), batch_size=2) == 10
    assert store.count() == 9
    got = {c.chunk_id: c.content for c in store.get([f"n{i}" for i in range(9)])}
    assert got == {f"n{i}": "again" if i == 0 else f"content of n{i}" for i in range(9)}


async def test_streamed_upsert_beyond_the_bind_parameter_ceiling(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store()
    n = 70_000  # more rows than a multi-VALUES INSERT could bind (65,535 parameters)

    def stream() -> Iterator[Chunk]:
        for i in range(n):
            yield Chunk(
                chunk_id=str(i), content="", embedding=[1.0, float(i % 7), 0.0], metadata={"i": i}
            )

    assert await api(store, "upsert", stream(), batch_size=20_000) == n
    assert store.count() == n
    assert store.count({"i": {"$gte": n - 10}}) == 10
    ids = [str(i) for i in range(0, n, 2)]
    assert await api(store, "delete", ids) == n // 2
    assert store.count() == n // 2


async def test_reads_and_deletes(make_store: StoreFactory, api: Api) -> None:
    store = make_store()
    await api(
        store,
        "upsert",
        [chunk(f"{doc}#{i}", entity_id=doc, chunk_index=i) for doc in "pq" for i in range(3)],
    )
    assert await api(store, "count") == 6
    assert await api(store, "get", []) == []
    assert [c.chunk_id for c in await api(store, "get", ["q#2", "p#0", "p#0"])] == ["p#0", "q#2"]
    assert await api(store, "delete", ["p#0", "nope"]) == 1
    assert await api(store, "delete_entities", ["q"]) == 3
    assert sorted(c.chunk_id for c in store.get(["p#1", "p#2", "q#0"])) == ["p#1", "p#2"]
    assert await api(store, "clear") == 2
    assert await api(store, "count") == 0


BAD_CHUNKS: list[tuple[Any, type[Exception], str]] = [
    (chunk("a", [1.0, 2.0]), DimensionError, r"expected 3 dimensions, got 2 \(chunk 'a'\)"),
    (chunk("a", [1.0, math.nan, 0.0]), InvalidInputError, r"finite.*chunk 'a'"),
    (chunk("a", [1.0, math.inf, 0.0]), InvalidInputError, r"finite"),
    (chunk("a", [1e39, 0.0, 0.0]), InvalidInputError, r"within"),
    (chunk("a", ["x", 0.0, 0.0]), InvalidInputError, r"numbers"),  # type: ignore[list-item]
    (chunk("a", content="nul\x00here"), InvalidInputError, r"content without NUL"),
    (chunk("a\x00"), InvalidInputError, r"chunk_id without NUL"),
    (chunk(""), InvalidInputError, r"non-empty chunk_id"),
    (chunk("a", metadata={"k": "v\x00"}), InvalidInputError, r"NUL"),
    (chunk("a", metadata={"k\x00": 1}), InvalidInputError, r"NUL"),
    (chunk("a", metadata={"k": math.nan}), InvalidInputError, r"JSON"),
    (chunk("a", metadata={"k": object()}), InvalidInputError, r"JSON"),
    (chunk("a", metadata=[1, 2]), InvalidInputError, r"mapping"),
    (chunk("a", chunk_index=-1), InvalidInputError, r"chunk_index"),
    (chunk("a", chunk_index=True), InvalidInputError, r"chunk_index"),
    (chunk("a", total_chunks=0), InvalidInputError, r"total_chunks"),
    (chunk("a", entity_id=5), InvalidInputError, r"entity_id to be str"),
    ({"chunk_id": "a"}, InvalidInputError, r"expected rag_pgstore.Chunk, got dict"),
]


@pytest.mark.parametrize("replacing", [True, False], ids=["merge", "copy"])
@pytest.mark.parametrize(("bad", "error", "message"), BAD_CHUNKS, ids=[m for _, _, m in BAD_CHUNKS])
async def test_bad_chunks_are_refused_and_nothing_is_written(
    make_store: StoreFactory,
    api: Api,
    bad: Any,
    error: type[Exception],
    message: str,
    replacing: bool,
) -> None:
    # A batch that replaces a row is merged, one of new ids only is copied straight in; the
    # metadata checks run while either COPY streams (in chunk_id order: "0..." rows go first),
    # so both must roll back whole.
    store = make_store()
    store.upsert([chunk("keep", content="original")])
    replaced = [chunk("keep", content="changed")] if replacing else []
    with pytest.raises(error, match=message):
        await api(store, "upsert", [chunk("0new-1"), *replaced, chunk("0new-2"), bad])
    assert [(c.chunk_id, c.content) for c in store.get(["keep", "0new-1", "0new-2", "a"])] == [
        ("keep", "original")
    ]


async def test_error_in_a_later_streamed_batch_rolls_back_earlier_ones(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store()
    stream = iter([chunk("s1"), chunk("s2"), chunk("s3"), chunk("s4", [1.0])])
    with pytest.raises(DimensionError):
        await api(store, "upsert", stream, batch_size=2)
    assert store.count() == 0


async def test_database_failure_mid_batch_leaves_the_table_as_it_was(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store()
    store.upsert([chunk("keep", content="original")])
    table = store.collection.table
    assert store.engine is not None
    with store.engine.begin() as conn:
        conn.execute(
            sa.schema.AddConstraint(
                sa.CheckConstraint(
                    table.c.content != "boom", name=f"{table.name}_no_boom", table=table
                )
            )
        )
    with pytest.raises(DatabaseError) as info:
        await api(
            store,
            "upsert",
            [chunk("keep", content="changed"), chunk("n1"), chunk("n2", content="boom")],
        )
    assert info.value.sqlstate == "23514"
    assert info.value.__cause__ is not None
    assert [(c.chunk_id, c.content) for c in store.get(["keep", "n1", "n2"])] == [
        ("keep", "original")
    ]


def test_upsert_refuses_non_iterables(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(InvalidInputError, match="iterable of Chunk"):
        store.upsert(chunk("a"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="list of chunk ids"):
        store.get("abc")
    with pytest.raises(InvalidInputError, match="non-empty filter"):
        store.delete_where({})


async def test_halfvec_above_2000_dimensions(make_store: StoreFactory, api: Api) -> None:
    store = make_store(dim=2048)
    assert store.collection.vector_type == "halfvec"
    vec = [0.5] * 2047 + [1.0]
    await api(store, "upsert", [chunk("h", vec)])
    (got,) = store.get(["h"], with_embeddings=True)
    assert got.embedding == vec
    with pytest.raises(InvalidInputError, match="65504"):
        store.upsert([chunk("big", [70000.0] + [0.0] * 2047)])
    hits = await api(store, "search", vec, k=1)
    assert hits[0].chunk.chunk_id == "h"
    assert hits[0].distance == pytest.approx(0.0, abs=1e-3)


def test_repr_hides_the_password(engines: Any) -> None:
    from rag_pgstore.connect import make_engines

    engine, async_engine = make_engines("postgresql://user:s3cret@db.example/app?sslmode=require")
    store = ChunkStore(engine, async_engine, collection="docs", dim=3)
    assert "s3cret" not in repr(store)
    assert "***" in repr(store)
    assert engine.url.query["sslmode"] == "require"


async def test_aupsert_consumes_an_async_stream_in_one_transaction(
    make_store: StoreFactory,
) -> None:
    store = make_store()

    async def produce(n: int, bad_at: int | None = None) -> AsyncIterator[Chunk]:
        for i in range(n):
            await asyncio.sleep(0)  # e.g. waiting for an embedding API
            yield chunk(f"s{i}", [1.0, float(i), 0.0] if i != bad_at else [1.0])

    assert await store.aupsert(produce(25), batch_size=10) == 25
    assert await store.acount() == 25
    with pytest.raises(DimensionError):
        await store.aupsert(produce(40, bad_at=35), batch_size=10)
    assert await store.acount() == 25  # the first three batches were rolled back with the fourth
    with pytest.raises(UnsupportedError, match="a\\* methods"):
        store.upsert(produce(1))


def test_a_store_keeps_working_across_event_loops(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert([chunk("a")])
    for _ in range(3):  # each asyncio.run is a new loop; pooled connections must not leak across
        assert asyncio.run(store.acount()) == 1
        assert [c.chunk_id for c in asyncio.run(store.aget_where({"chunk_id": "a"}))] == ["a"]


async def test_get_where(make_store: StoreFactory, api: Api) -> None:
    store = make_store()
    store.upsert(
        [
            chunk(f"c{i}", entity_id="e", chunk_index=i, metadata={"even": i % 2 == 0})
            for i in range(5)
        ]
    )
    assert [c.chunk_id for c in await api(store, "get_where", {"even": True})] == ["c0", "c2", "c4"]
    assert [c.chunk_id for c in await api(store, "get_where", None, limit=2)] == ["c0", "c1"]


def test_upserts_plan_each_existence_check_for_its_own_ids(make_store: StoreFactory) -> None:
    # A generic plan of the existence check, made while the table was empty, would compare
    # every row with every id for the rest of a long streamed write (see ops/writes._write).
    from rag_pgstore.driver.steps import Fetch, Plan
    from rag_pgstore.ops import writes

    store = make_store()
    prepared = sa.text("SELECT statement FROM pg_prepared_statements")
    setting = sa.select(sa.func.current_setting("plan_cache_mode"))

    def many_upserts_on_one_connection() -> Plan[tuple[list[str], str]]:
        for i in range(8):  # psycopg prepares what runs 5 times on a connection
            yield from writes.plan_of(writes.upsert(store.collection, [chunk(f"c{i}")]))
        rows = yield Fetch(prepared)
        [(mode,)] = yield Fetch(setting)
        return [row[0] for row in rows], str(mode)

    statements, mode = store.run_plan(many_upserts_on_one_connection())
    assert not [s for s in statements if "EXISTS" in s]
    # Nothing changed how the COPY's keyword trigger plans its statements.
    assert mode == "auto"
    assert store.count() == 8


async def test_describe_reports_counts_settings_and_whether_searches_use_the_index(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store(distance="l2")
    store.upsert(
        [
            chunk("a"),
            chunk("b"),
            Chunk(chunk_id="c", entity_id="a", content="x", embedding=[1.0, 0.0, 0.0]),
        ]
    )
    info = await api(store, "describe")
    assert (info.chunks, info.entities, info.dim, info.distance) == (3, 2, 3, "l2")
    assert info.schema_version >= 2 and info.ann_index is None and not info.uses_ann_index
    assert f"{store.collection.name}_metadata_gin" in info.indexes
    assert info.server_version and info.pgvector_version
    store.create_index()
    indexed = await api(store, "describe")
    assert indexed.ann_index == {"using": "hnsw", "m": 16, "ef_construction": 64}
    assert store.collection.index_name in indexed.indexes
    other = make_store(setup=False)
    with pytest.raises(SchemaError, match="found none"):
        await api(other, "describe")


async def test_an_existing_collection_opens_without_its_settings(
    make_store: StoreFactory, db: Any
) -> None:
    made = make_store(dim=12, distance="l2", keyword="ts_rank")
    name = made.collection.name
    opened = ChunkStore.from_url(db.url, collection=name)
    try:
        c = opened.collection
        assert (c.dim, c.distance.value, c.keyword) == (12, "l2", None)  # registry decides
        assert opened.describe().keyword == "ts_rank"
    finally:
        opened.close()
    aopened = await ChunkStore.afrom_url(db.url, collection=name)
    assert aopened.collection.dim == 12
    await aopened.aclose()
    with pytest.raises(UnsupportedError, match="got dim=0"):
        ChunkStore.from_url(db.url, collection=f"{name}_zero", dim=0)
    with pytest.raises(SchemaError, match="was created with distance='l2'"):
        ChunkStore.from_url(db.url, collection=name, distance="cosine")
    with pytest.raises(CollectionNotFoundError, match="found none") as missing:
        ChunkStore.from_url(db.url, collection=f"{name}_never")
    assert missing.value.name == f"{name}_never"
    assert isinstance(missing.value, LookupError)


async def test_list_collections_reports_counts_and_settings(
    make_store: StoreFactory, db: Any
) -> None:
    store = make_store(dim=3, keyword="off")
    store.upsert([chunk("a", [1.0, 0.0, 0.0], entity_id="e1"), chunk("b", entity_id="e1")])
    listed = {c.name: c for c in ChunkStore.list_collections(db.url)}
    mine = listed[store.collection.name]
    assert (mine.chunks, mine.entities, mine.dim, mine.keyword) == (2, 1, 3, "off")
    assert mine.embedder is None and mine.ann_index is None
    alisted = await ChunkStore.alist_collections(db.url)
    assert store.collection.name in {c.name for c in alisted}
    assert await ChunkStore.alist_collections(db.url, schema="no_such_schema") == []


def test_a_registry_from_before_the_embedder_column_still_reads(
    make_store: StoreFactory, db: Any
) -> None:
    store = make_store(dim=3, schema="old_registry")
    assert store.engine is not None
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE old_registry.rag_pgstore_collections DROP COLUMN embedder")
        )
    listed = ChunkStore.list_collections(db.url, schema="old_registry")
    assert [c.embedder for c in listed] == [None]
    opened = ChunkStore.from_url(db.url, collection=store.collection.name, schema="old_registry")
    assert opened.collection.dim == 3
    assert opened.describe().embedder is None  # read-only commands work before an upgrade
    opened.setup()  # adds the column back
    assert opened.describe().embedder is None
    opened.close()
