"""Hostile input at the boundary: each gets a typed error, and the store is left as it was."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from rag_pgstore import (
    Chunk,
    ChunkStore,
    CollectionNameError,
    Distance,
    FilterError,
    InvalidInputError,
)
from rag_pgstore.codec import MAX_METADATA_DEPTH
from rag_pgstore.sql.filters import IN_CONTAINS_MAX, MAX_DEPTH
from tests.conftest import Api, StoreFactory


def chunk(chunk_id: str, embedding: list[float], **metadata: Any) -> Chunk:
    return Chunk(
        chunk_id=chunk_id, content=f"text {chunk_id}", embedding=embedding, metadata=metadata
    )


# -- zero vectors ------------------------------------------------------------------------------


async def test_zero_vectors_are_refused_under_cosine(make_store: StoreFactory, api: Api) -> None:
    store = make_store()
    await api(store, "upsert", [chunk("ok", [1.0, 0.0, 0.0])])
    with pytest.raises(InvalidInputError, match=r"non-zero embedding.*chunk 'zero'"):
        await api(store, "upsert", [chunk("fine", [0.0, 1.0, 0.0]), chunk("zero", [0.0] * 3)])
    assert await api(store, "count") == 1  # nothing of the batch was written
    for method, args in [
        ("search", ([0.0, 0.0, 0.0],)),
        ("mmr_search", ([0.0, 0.0, 0.0],)),
        ("hybrid_search", ([0.0, 0.0, 0.0], "text")),
    ]:
        with pytest.raises(InvalidInputError, match="query embedding"):
            await api(store, method, *args)


async def test_zero_vectors_are_fine_where_the_distance_is_defined(
    make_store: StoreFactory, api: Api
) -> None:
    for distance in (Distance.L2, Distance.INNER_PRODUCT, Distance.L1):
        store = make_store(distance=distance)
        await api(store, "upsert", [chunk("zero", [0.0] * 3), chunk("one", [1.0, 0.0, 0.0])])
        hits = await api(store, "search", [0.0, 0.0, 0.0], k=2)
        assert all(hit.score == hit.score for hit in hits)  # no NaN
        hybrid = await api(store, "hybrid_search", [1.0, 0.0, 0.0], "text", k=2)
        assert all(hit.score == hit.score for hit in hybrid)


def test_a_zero_vector_written_by_hand_does_not_poison_hybrid_scores(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    store.upsert([chunk("one", [1.0, 0.0, 0.0]), chunk("two", [0.0, 1.0, 0.0])])
    assert store.engine is not None
    with store.engine.begin() as conn:  # as an older version or another tool could have
        table = store.collection.table
        conn.execute(table.update().where(table.c.chunk_id == "two").values(embedding=[0.0] * 3))
    hits = store.hybrid_search([1.0, 0.0, 0.0], "text", k=2)
    assert [h.chunk.chunk_id for h in hits] == ["one", "two"]
    assert all(h.score == h.score for h in hits)  # no NaN


def test_a_vector_that_underflows_to_zero_in_halfvec_is_refused(make_store: StoreFactory) -> None:
    store = make_store(dim=2_001)  # stored as halfvec
    with pytest.raises(InvalidInputError, match="non-zero"):
        store.upsert([chunk("tiny", [1e-10] * 2_001)])


# -- filters with many values ------------------------------------------------------------------

VALUES: list[Any] = [1, 1.0, "1", True, None, [1], {"a": 1}, 2]


@pytest.fixture
def valued(make_store: StoreFactory) -> ChunkStore:
    store = make_store()
    store.upsert(
        [chunk(f"v{i}", [1.0, float(i), 0.0], v=value) for i, value in enumerate(VALUES)]
        + [chunk("missing", [1.0, 0.0, 1.0])]
    )
    return store


@pytest.mark.parametrize("wanted", [[1], ["1", None], [True, 2], [], [1.0, "x"]])
def test_in_and_nin_mean_the_same_with_few_or_many_values(
    valued: ChunkStore, wanted: list[Any]
) -> None:
    padding = [f"pad{i}" for i in range(70_000)]  # past the 65,535-parameter ceiling
    assert len(wanted) <= IN_CONTAINS_MAX < len(wanted + padding)
    for op in ("$in", "$nin"):
        few = {c.chunk_id for c in valued.get_where({"v": {op: wanted}})}
        many = {c.chunk_id for c in valued.get_where({"v": {op: wanted + padding}})}
        assert few == many, op
    assert valued.count({"v": {"$in": wanted}}) + valued.count({"v": {"$nin": wanted}}) == 9


async def test_a_seventy_thousand_value_in_through_each_door(valued: ChunkStore, api: Api) -> None:
    many = [*range(100, 70_100), 2]
    assert [c.chunk_id for c in await api(valued, "get_where", {"v": {"$in": many}})] == ["v7"]
    assert await api(valued, "count", {"v": {"$nin": many}}) == 8
    hits = await api(valued, "search", [1.0, 0.0, 0.0], k=5, filter={"v": {"$in": many}})
    assert [h.chunk.chunk_id for h in hits] == ["v7"]
    assert await api(valued, "delete_where", {"v": {"$in": many}}) == 1


@pytest.mark.frameworks
def test_llamaindex_in_with_seventy_thousand_values(valued: ChunkStore) -> None:
    from llama_index.core.vector_stores.types import (
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )

    from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore

    vs = LlamaIndexVectorStore(valued)
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="v", value=[*range(100, 70_100), 2], operator=FilterOperator.IN)
        ]
    )
    assert [n.node_id for n in vs.get_nodes(filters=filters)] == ["v7"]


# -- nesting -------------------------------------------------------------------------------------


def nested(depth: int, leaf: Any = 1, key: str = "a") -> Any:
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


def nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_METADATA_DEPTH + 1, 5_000])
async def test_deep_metadata_is_refused_not_a_recursion_error(
    make_store: StoreFactory, api: Api, depth: int
) -> None:
    store = make_store()
    with pytest.raises(InvalidInputError, match=f"nested at most {MAX_METADATA_DEPTH} deep"):
        await api(
            store,
            "upsert",
            [chunk("ok", [1.0, 0.0, 0.0]), chunk("deep", [0.0, 1.0, 0.0], m=nested(depth))],
        )
    assert await api(store, "count") == 0


def test_metadata_at_the_nesting_limit_round_trips(make_store: StoreFactory) -> None:
    store = make_store()
    deep = nested(MAX_METADATA_DEPTH - 1)
    store.upsert([chunk("deep", [1.0, 0.0, 0.0], m=deep, braces="{[" * 200)])
    (stored,) = store.get(["deep"])
    assert stored.metadata["m"] == deep


@pytest.mark.parametrize(
    "filter",
    [
        {"m": {"$eq": nested(3_000)}},
        {"m": {"$contains": nested_list(3_000)}},
        {"m": nested(1_000, leaf={"$eq": 1}, key="$not")},
        nested(1_000, leaf={"m": 1}, key="$not"),
        {"$and": [nested(5_000, leaf={"m": 1}, key="$or")]},
        {"$or": [nested_list(5_000)]},
        {"m": {"$in": [nested_list(5_000)]}},
    ],
    ids=["value", "contains", "field-not", "not", "or", "list", "in-list"],
)
async def test_deep_filters_are_refused_not_a_recursion_error(
    make_store: StoreFactory, api: Api, filter: Any
) -> None:
    store = make_store()
    await api(store, "upsert", [chunk("a", [1.0, 0.0, 0.0], m=1)])
    with pytest.raises(FilterError):
        await api(store, "count", filter)
    with pytest.raises(FilterError):
        await api(store, "delete_where", filter)
    assert await api(store, "count") == 1


def test_filters_at_the_nesting_limit_work(make_store: StoreFactory) -> None:
    store = make_store()
    store.upsert([chunk("a", [1.0, 0.0, 0.0], m=nested(MAX_DEPTH - 2))])
    assert store.count({"m": nested(MAX_DEPTH - 2)}) == 1
    assert MAX_DEPTH % 2 == 0  # an even number of $not: the chunk matches
    assert store.count(nested(MAX_DEPTH - 2, leaf={"m": {"$exists": True}}, key="$not")) == 1


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "rag_pgstore_embedding_cache",
        "rag_pgstore_collections",
        "rag_pgstore_stage",
        "rag_pgstore_x",
    ],
)
def test_internal_names_are_reserved(make_store: StoreFactory, name: str) -> None:
    with pytest.raises(CollectionNameError, match="reserved"):
        make_store(name=name)


def test_a_collection_cannot_take_another_ones_index_name(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(Exception, match="choose another collection name"):
        make_store(name=f"{store.collection.name}_metadata_gin")
    assert store.count() == 0


def test_errors_never_show_a_deep_value_whole() -> None:
    from rag_pgstore.schema import Collection
    from rag_pgstore.sql.filters import compile_filter

    with pytest.raises(FilterError) as info:
        compile_filter({"$or": [nested_list(50)]}, Collection("docs", 3).table)
    assert len(str(info.value)) < 300


def test_a_tiny_query_that_is_zero_in_halfvec_is_refused(make_store: StoreFactory) -> None:
    store = make_store(dim=2_001)
    store.upsert([chunk("one", [1.0] + [0.0] * 2_000)])
    with pytest.raises(InvalidInputError, match="non-zero"):
        store.search([1e-10] * 2_001)
    with pytest.raises(InvalidInputError, match="65504"):
        store.search([1e6] * 2_001)


@pytest.mark.frameworks
def test_deep_llamaindex_filters_are_refused_not_a_recursion_error(
    make_store: StoreFactory,
) -> None:
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore

    deep = MetadataFilters(filters=[MetadataFilter(key="m", value=1)])
    for _ in range(3_000):
        deep = MetadataFilters(filters=[deep])
    vs = LlamaIndexVectorStore(make_store())
    with pytest.raises(FilterError, match="nested at most"):
        vs.get_nodes(filters=deep)


def test_a_table_dropped_by_hand_comes_back_with_the_settings_it_is_opened_with(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    assert store.engine is not None
    with store.engine.begin() as conn:
        conn.execute(sa.schema.DropTable(store.collection.table))
    again = make_store(name=store.collection.name, dim=5)  # the registry row was stale
    again.upsert([chunk("a", [1.0, 0.0, 0.0, 0.0, 0.0])])
    assert again.describe().dim == 5
