"""Vector search against a brute-force reference, for every distance, with and without indexes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import (
    Chunk,
    ChunkStore,
    Distance,
    HnswIndex,
    InvalidInputError,
    IvfflatIndex,
    SearchTuning,
    UnsupportedError,
)
from rag_pgstore.connect import make_engines
from rag_pgstore.driver import policy
from rag_pgstore.sql import search as st
from rag_pgstore.testing import TestDatabase as Database
from tests.conftest import Api, StoreFactory

DIM = 8
N = 300
rng = np.random.default_rng(7)
VECTORS = rng.normal(size=(N, DIM)).astype(np.float32)
UNIT = VECTORS / np.linalg.norm(VECTORS, axis=1, keepdims=True)
QUERY = rng.normal(size=DIM).astype(np.float32)


def reference(distance: Distance, vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """What each pgvector operator returns, computed by numpy."""
    if distance is Distance.COSINE:
        return 1 - vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))  # type: ignore[no-any-return]
    if distance is Distance.L2:
        return np.linalg.norm(vectors - query, axis=1)  # type: ignore[no-any-return]
    if distance is Distance.INNER_PRODUCT:
        return -(vectors @ query)  # type: ignore[no-any-return]
    return np.abs(vectors - query).sum(axis=1)  # type: ignore[no-any-return]


def load(store: ChunkStore, vectors: np.ndarray) -> None:
    store.upsert(
        Chunk(
            chunk_id=f"c{i}",
            content=f"chunk {i}",
            embedding=v.tolist(),
            metadata={"bucket": i % 100},
        )
        for i, v in enumerate(vectors)
    )


@pytest.fixture
def vectors(distance: Distance) -> np.ndarray:
    # Inner product is meant for unit-length vectors; the others get raw ones.
    return UNIT if distance is Distance.INNER_PRODUCT else VECTORS


async def test_exact_search_matches_numpy(
    make_store: StoreFactory, api: Api, distance: Distance, vectors: np.ndarray
) -> None:
    store = make_store(dim=DIM, distance=distance)
    load(store, vectors)
    query = QUERY / np.linalg.norm(QUERY) if distance is Distance.INNER_PRODUCT else QUERY
    expected = reference(distance, vectors, query)
    order = np.argsort(expected, kind="stable")[:10]
    hits = await api(store, "search", query.tolist(), k=10)
    assert [h.chunk.chunk_id for h in hits] == [f"c{i}" for i in order]
    for hit, i in zip(hits, order, strict=True):
        assert hit.distance == pytest.approx(float(expected[i]), abs=1e-4)
        assert hit.score == pytest.approx(distance.score(float(expected[i])), abs=1e-4)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)  # nearest first, never inverted
    assert all(0.0 <= s <= 1.0 for s in scores)


async def test_min_score_and_offset(
    make_store: StoreFactory, api: Api, distance: Distance, vectors: np.ndarray
) -> None:
    store = make_store(dim=DIM, distance=distance)
    load(store, vectors)
    every = await api(store, "search", QUERY.tolist(), k=20)
    page2 = await api(store, "search", QUERY.tolist(), k=5, offset=5)
    assert [h.chunk.chunk_id for h in page2] == [h.chunk.chunk_id for h in every[5:10]]
    threshold = every[7].score
    kept = await api(store, "search", QUERY.tolist(), k=20, min_score=threshold)
    assert [h.chunk.chunk_id for h in kept] == [
        h.chunk.chunk_id for h in every if h.score >= threshold
    ]
    assert 8 <= len(kept) < 20


async def test_indexed_search_uses_the_index_and_finds_the_neighbours(
    make_store: StoreFactory, api: Api, distance: Distance, vectors: np.ndarray
) -> None:
    store = make_store(dim=DIM, distance=distance)
    load(store, vectors)
    exact = [h.chunk.chunk_id for h in store.search(QUERY.tolist(), k=10)]
    assert await api(store, "create_index", HnswIndex(m=16, ef_construction=64)) is True
    assert await api(store, "create_index", HnswIndex(m=16, ef_construction=64)) is False
    tuned = await api(store, "search", QUERY.tolist(), k=10, tuning=SearchTuning(ef_search=200))
    assert len(set(exact) & {h.chunk.chunk_id for h in tuned}) >= 9
    assert store.collection.index_name in explain(store)
    await api(store, "drop_index")
    assert store.collection.index_name not in explain(store)


async def test_plain_search_picks_its_form_by_whether_there_is_an_index(
    make_store: StoreFactory, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without an ANN index the plain search ranks (chunk_id, distance) first and joins back
    # the winners; with one, it is the ORDER BY ... LIMIT the index serves. Same rows either way.
    store = make_store(dim=DIM)
    load(store, VECTORS)
    assert store.engine is not None
    database, c = policy.database(store.engine), store.collection

    def hint() -> bool | None:
        return policy.hint(database, c.schema, c.name)

    scan = [h.chunk.chunk_id for h in await api(store, "search", QUERY.tolist(), k=10)]
    assert hint() is False
    exact = await api(store, "search", QUERY.tolist(), k=10, tuning=SearchTuning(exact=True))
    assert [h.chunk.chunk_id for h in exact] == scan
    await api(store, "create_index")
    assert hint() is None  # forgotten: the next search asks again
    indexed = await api(store, "search", QUERY.tolist(), k=10, tuning=SearchTuning())
    assert hint() is True
    assert len(set(scan) & {h.chunk.chunk_id for h in indexed}) >= 8
    # An index dropped elsewhere is noticed once the hint is older than HINT_SECONDS.
    other = ChunkStore(store.engine, store.async_engine, collection=store.collection.name, dim=DIM)
    other.drop_index()
    monkeypatch.setattr(policy, "HINT_SECONDS", 0.0)
    again = [h.chunk.chunk_id for h in await api(store, "search", QUERY.tolist(), k=10)]
    assert hint() is False and again == scan


def explain(store: ChunkStore) -> str:
    assert store.engine is not None
    statement = st.vector_search(
        store.collection, st.query_param(store.collection, QUERY.tolist()), k=5
    )
    with store.engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        return json.dumps(conn.execute(st.Explain(statement)).scalar_one())


async def test_ivfflat_index_and_probes(make_store: StoreFactory, api: Api) -> None:
    store = make_store(dim=DIM, distance=Distance.L2)
    load(store, VECTORS)
    exact = [h.chunk.chunk_id for h in store.search(QUERY.tolist(), k=10)]
    assert await api(store, "create_index", IvfflatIndex(lists=4)) is True
    assert store.collection.index_name in explain(store)
    full = await api(store, "search", QUERY.tolist(), k=10, tuning=SearchTuning(probes=4))
    assert [h.chunk.chunk_id for h in full] == exact  # probing every list is exact
    # Replacing the index with another kind rebuilds it.
    assert await api(store, "create_index", HnswIndex()) is True


def test_index_limits(make_store: StoreFactory) -> None:
    with pytest.raises(UnsupportedError, match="IVFFlat does not support"):
        make_store(dim=DIM, distance=Distance.L1).create_index(IvfflatIndex())
    with pytest.raises(UnsupportedError, match="at most 4000 dimensions"):
        make_store(dim=4001).create_index(HnswIndex())
    with pytest.raises(ValueError, match="ef_construction"):
        HnswIndex(m=32, ef_construction=40)
    with pytest.raises(ValueError, match="iterative_scan"):
        SearchTuning(iterative_scan="sometimes")  # type: ignore[arg-type]


async def test_selective_filter_still_returns_k_rows(make_store: StoreFactory, api: Api) -> None:
    store = make_store(dim=DIM)
    many = np.tile(VECTORS, (10, 1)) + rng.normal(scale=0.01, size=(N * 10, DIM)).astype(np.float32)
    store.upsert(
        Chunk(chunk_id=f"r{i}", content="", embedding=v.tolist(), metadata={"bucket": i % 100})
        for i, v in enumerate(many)
    )  # 3,000 rows; each bucket holds 1%
    store.create_index(HnswIndex())
    in_bucket = np.flatnonzero(np.arange(len(many)) % 100 == 42)
    distances = reference(Distance.COSINE, many[in_bucket], QUERY)
    expected = [f"r{in_bucket[i]}" for i in np.argsort(distances)[:10]]
    for tuning in (None, SearchTuning(exact=False), SearchTuning(exact=True)):
        hits = await api(
            store, "search", QUERY.tolist(), k=10, filter={"bucket": 42}, tuning=tuning
        )
        assert len(hits) == 10, tuning
        if tuning is None or tuning.exact:
            assert [h.chunk.chunk_id for h in hits] == expected


def one_connection_store(
    db: Database, name: str, vectors: np.ndarray
) -> tuple[ChunkStore, sa.Engine, AsyncEngine]:
    """A loaded store whose engines hold one connection each, so its session can be read."""
    engine, async_engine = make_engines(db.url, {"pool_size": 1, "max_overflow": 0})
    store = ChunkStore(engine, async_engine, collection=name, dim=DIM)
    store.setup()
    load(store, vectors)
    return store, engine, async_engine


async def test_tuning_never_leaks_into_the_pool(
    db: Database, collection_name: str, api: Api
) -> None:
    store, engine, async_engine = one_connection_store(db, collection_name, VECTORS[:20])
    tuning = SearchTuning(
        ef_search=123, probes=7, iterative_scan="relaxed_order", max_scan_tuples=999
    )
    await api(store, "search", QUERY.tolist(), k=3, tuning=tuning)
    await api(store, "search", QUERY.tolist(), k=3, filter={"bucket": 1})

    def settings(conn: Any) -> list[str]:
        conn.execute(sa.text("SELECT '[1]'::vector"))  # load pgvector so its settings exist
        names = ("hnsw.ef_search", "ivfflat.probes", "hnsw.iterative_scan", "hnsw.max_scan_tuples")
        return [conn.execute(sa.select(sa.func.current_setting(n))).scalar_one() for n in names]

    with engine.connect() as conn:
        assert settings(conn) == ["40", "1", "off", "20000"]
    async with async_engine.connect() as aconn:
        assert await aconn.run_sync(settings) == ["40", "1", "off", "20000"]
    engine.dispose()
    await async_engine.dispose()


async def test_plain_search_runs_with_the_store_ef_search(
    db: Database, collection_name: str, api: Api
) -> None:
    # pgvector's default ef_search (40) also caps an HNSW scan at 40 rows: k=100 would get 40.
    store, engine, async_engine = one_connection_store(db, collection_name, VECTORS)
    store.create_index(HnswIndex())
    current = sa.select(sa.func.current_setting("hnsw.ef_search"))
    for k, expected in ((10, "150"), (300, "300")):
        hits = await api(store, "search", QUERY.tolist(), k=k)
        assert len(hits) == k
        # The Read set it on its (only) pooled connection for the session, once.
        if api.mode == "sync":
            with engine.connect() as conn:
                assert conn.execute(current).scalar_one() == expected
        else:
            async with async_engine.connect() as aconn:
                assert (await aconn.execute(current)).scalar_one() == expected
    hits = await api(store, "search", QUERY.tolist(), k=100, filter={"bucket": {"$gte": 0}})
    assert len(hits) == 100
    engine.dispose()
    await async_engine.dispose()


async def test_search_like_excludes_the_chunk_itself(make_store: StoreFactory, api: Api) -> None:
    store = make_store(dim=DIM)
    load(store, VECTORS[:50])
    hits = await api(store, "search_like", "c3", k=5)
    expected = np.argsort(reference(Distance.COSINE, VECTORS[:50], VECTORS[3]))[1:6]
    assert [h.chunk.chunk_id for h in hits] == [f"c{i}" for i in expected]
    assert await api(store, "search_like", "missing", k=5) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": [1.0] * 7}, "expected 8 dimensions, got 7"),
        ({"query": [float("nan")] * 8}, "finite"),
        ({"query": [1.0] * 8, "k": 0}, "k to be a positive int"),
        ({"query": [1.0] * 8, "offset": -1}, "offset"),
    ],
)
async def test_bad_queries_are_refused(
    make_store: StoreFactory, api: Api, kwargs: dict[str, Any], message: str
) -> None:
    store = make_store(dim=DIM)
    options = {key: value for key, value in kwargs.items() if key != "query"}
    with pytest.raises(InvalidInputError, match=message):
        await api(store, "search", kwargs["query"], **options)
