"""Full-text, hybrid and MMR search on small data whose answers can be worked out by hand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as hs

from rag_pgstore import Chunk, ChunkStore, Fusion, HybridOptions, InvalidInputError, TextMode
from rag_pgstore.ops.mmr import mmr_select
from rag_pgstore.pipeline.hashing import hash_embedding
from tests.conftest import Api, StoreFactory

DIM = 64
TEXTS = {
    "pg": "PostgreSQL stores rows in tables and answers SQL queries.",
    "vec": "pgvector adds vector similarity search to PostgreSQL.",
    "hnsw": "HNSW graphs find approximate nearest neighbours quickly.",
    "fts": "Full-text search ranks documents by the words they share with a query.",
    "bread": "Sourdough bread needs flour, water, salt and patience.",
    "obrien": "Mr. O'Brien's notes on C++ & Rust (draft).",
}


@pytest.fixture
def store(make_store: StoreFactory) -> ChunkStore:
    store = make_store(dim=DIM)
    store.upsert(
        Chunk(
            chunk_id=cid,
            content=text,
            embedding=hash_embedding(text, DIM),
            metadata={"food": cid == "bread"},
        )
        for cid, text in TEXTS.items()
    )
    return store


def ids(hits: list[Any]) -> list[str]:
    return [h.chunk.chunk_id for h in hits]


async def test_text_search_ranks_by_words(store: ChunkStore, api: Api) -> None:
    hits = await api(store, "text_search", "how does vector search work in PostgreSQL?", k=3)
    assert ids(hits)[0] == "vec"  # shares the most words
    assert set(ids(hits)) <= {"vec", "pg", "fts"}
    assert all(h.distance is None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_websearch_mode_keeps_its_syntax(store: ChunkStore, api: Api) -> None:
    web = TextMode.WEBSEARCH
    assert ids(await api(store, "text_search", "search PostgreSQL", k=5, mode=web)) == [
        "vec"
    ]  # all words
    assert ids(await api(store, "text_search", '"similarity search"', k=5, mode=web)) == ["vec"]
    assert ids(await api(store, "text_search", "search -vector", k=5, mode=web)) == ["fts"]
    assert sorted(ids(await api(store, "text_search", "bread or graphs", k=5, mode=web))) == [
        "bread",
        "hnsw",
    ]


@pytest.mark.parametrize(
    "text", ["O'Brien's", "C++ & Rust | !(draft", "'; DROP TABLE x; --", "", "the and of", "::*<->"]
)
async def test_any_text_is_a_valid_query(store: ChunkStore, api: Api, text: str) -> None:
    for mode in TextMode:
        hits = await api(store, "text_search", text, k=3, mode=mode)
        assert set(ids(hits)) <= {"obrien", "fts", "pg", "vec", "hnsw", "bread"}
    assert store.count() == len(TEXTS)


async def test_hybrid_finds_what_either_side_finds(store: ChunkStore, api: Api) -> None:
    # The vector points at "bread"; the words point at "hnsw".
    hits = await api(
        store,
        "hybrid_search",
        hash_embedding(TEXTS["bread"], DIM),
        "approximate nearest neighbours",
        k=6,
    )
    assert {"bread", "hnsw"} <= set(ids(hits)[:2])
    by_id = {h.chunk.chunk_id: h for h in hits}
    assert by_id["bread"].distance == pytest.approx(0.0, abs=1e-6)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("fusion", list(Fusion))
async def test_weights_move_the_ranking_between_the_sides(
    store: ChunkStore, api: Api, fusion: Fusion
) -> None:
    query, text = hash_embedding(TEXTS["bread"], DIM), "approximate nearest neighbours"
    vector_only = await api(
        store,
        "hybrid_search",
        query,
        text,
        k=3,
        options=HybridOptions(fusion=fusion, vector_weight=1.0),
    )
    text_only = await api(
        store,
        "hybrid_search",
        query,
        text,
        k=3,
        options=HybridOptions(fusion=fusion, vector_weight=0.0),
    )
    assert ids(vector_only)[0] == "bread"
    assert ids(text_only)[0] == "hnsw"
    assert ids(vector_only)[:3] == ids(store.search(query, k=3))


async def test_hybrid_filter_applies_to_both_sides(store: ChunkStore, api: Api) -> None:
    hits = await api(
        store,
        "hybrid_search",
        hash_embedding(TEXTS["bread"], DIM),
        "nearest neighbours",
        k=6,
        filter={"food": False},
    )
    assert "bread" not in ids(hits)
    assert "hnsw" in ids(hits)


@contextmanager
def statements(store: ChunkStore) -> Iterator[list[str]]:
    assert store.engine is not None
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)


def test_hybrid_is_one_statement_after_its_settings(store: ChunkStore) -> None:
    store.hybrid_search(hash_embedding("bread", DIM), "bread", k=3)  # warm the pool
    for filter in (None, {"food": True}):
        with statements(store) as seen:
            store.hybrid_search(hash_embedding("bread", DIM), "bread", k=3, filter=filter)
        # The query's lexemes, with the SET LOCAL of ef_search (and of the iterative scan a
        # filtered ANN query needs); then both legs and the fusion in one statement.
        assert len(seen) == 2
        assert "set_config" in seen[0] and "tsvector_to_array" in seen[0]
        assert "JOIN LATERAL" in seen[1] and "<=>" in seen[1]


def test_hybrid_runs_with_the_sizes_it_reports(store: ChunkStore) -> None:
    assert store.engine is not None
    params: list[Any] = []

    def record(*args: Any) -> None:
        params.append(args[3])

    options = HybridOptions(vector_k=33, text_candidates=777)
    for filter in (None, {"food": True}):
        sizes = options.sizes(3, filtered=filter is not None)
        params.clear()
        sa.event.listen(store.engine, "before_cursor_execute", record)
        try:
            store.hybrid_search(
                hash_embedding("bread", DIM), "bread", k=3, filter=filter, options=options
            )
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", record)
        settings = {v for v in params[0].values() if isinstance(v, str)}
        assert str(sizes.ef_search) in settings and sizes.ef_search == 150
        assert ("strict_order" in settings) == (sizes.iterative_scan == "strict_order")
        values = {v for v in params[-1].values() if isinstance(v, int)}
        assert {sizes.vector_k, sizes.text_k, sizes.text_candidates} <= values
        assert (sizes.vector_k, sizes.text_k, sizes.text_candidates) == (33, 40, 777)


QUERY_3D = [1.0, 0.0, 0.3]  # near "a" and its copy; "b" is 60 degrees from "a"


async def test_mmr_prefers_diverse_results(make_store: StoreFactory, api: Api) -> None:
    store = make_store()
    store.upsert(
        [
            Chunk(chunk_id="a", content="", embedding=[1.0, 0.0, 0.0]),
            Chunk(chunk_id="a-copy", content="", embedding=[0.999, 0.02, 0.0]),
            Chunk(chunk_id="b", content="", embedding=[0.5, 0.0, 0.866]),
            Chunk(chunk_id="c", content="", embedding=[0.0, 1.0, 0.0]),
        ]
    )
    assert ids(await api(store, "search", QUERY_3D, k=2)) == ["a", "a-copy"]
    assert ids(await api(store, "mmr_search", QUERY_3D, k=2, fetch_k=4, lambda_mult=0.5)) == [
        "a",
        "b",
    ]
    assert ids(await api(store, "mmr_search", QUERY_3D, k=2, fetch_k=4, lambda_mult=1.0)) == [
        "a",
        "a-copy",
    ]
    assert ids(await api(store, "mmr_search", [1.0, 0.0, 0.0], k=3, filter={"missing": 1})) == []
    with pytest.raises(InvalidInputError, match="lambda_mult"):
        await api(store, "mmr_search", [1.0, 0.0, 0.0], lambda_mult=2.0)


def test_text_config_decides_what_is_searchable(make_store: StoreFactory) -> None:
    english = make_store(dim=DIM)
    simple = make_store(dim=DIM, text_config="simple")
    for store in (english, simple):
        store.upsert(
            [Chunk(chunk_id="w", content="the with statement", embedding=hash_embedding("w", DIM))]
        )
    assert ids(english.text_search("with", k=1)) == []  # an English stop word
    assert ids(simple.text_search("with", k=1)) == ["w"]
    assert ids(english.text_search("statements", k=1)) == ["w"]  # stemmed
    assert ids(simple.text_search("statements", k=1)) == []


def test_bad_hybrid_arguments() -> None:
    with pytest.raises(ValueError, match="vector_weight"):
        HybridOptions(vector_weight=1.5)
    with pytest.raises(ValueError, match="rrf_k"):
        HybridOptions(rrf_k=0)
    with pytest.raises(ValueError):
        HybridOptions(fusion="magic")  # type: ignore[arg-type]


async def test_bad_query_text(store: ChunkStore, api: Api) -> None:
    with pytest.raises(InvalidInputError, match="NUL"):
        await api(store, "hybrid_search", hash_embedding("x", DIM), "a\x00b")
    with pytest.raises(InvalidInputError, match="query text"):
        await api(store, "text_search", 42)


@settings(max_examples=60, deadline=None)
@given(
    hs.lists(hs.lists(hs.floats(-1, 1), min_size=4, max_size=4), min_size=1, max_size=12),
    hs.integers(1, 15),
    hs.floats(0, 1),
)
def test_mmr_select_properties(candidates: list[list[float]], k: int, lambda_mult: float) -> None:
    query = [0.5, -0.25, 1.0, 0.0]
    picked = mmr_select(query, candidates, k=k, lambda_mult=lambda_mult)
    assert len(picked) == min(k, len(candidates))
    assert len(set(picked)) == len(picked)
    matrix = np.asarray(candidates)
    norms = np.linalg.norm(matrix, axis=1)
    relevance = matrix @ np.asarray(query) / np.where(norms == 0, 1, norms)
    assert relevance[picked[0]] == pytest.approx(relevance.max())
    if lambda_mult == 1.0:
        assert sorted(relevance[picked], reverse=True) == pytest.approx(list(relevance[picked]))
