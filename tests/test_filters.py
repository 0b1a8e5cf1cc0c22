"""The filter language, as data: each case is a filter and the chunk ids it must select."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from rag_pgstore import Chunk, ChunkStore, FilterError
from rag_pgstore.schema import Collection
from rag_pgstore.sql.filters import compile_filter
from tests.conftest import PG, Api, StoreFactory

METADATA: dict[str, dict[str, Any]] = {
    "a": {
        "topic": "db",
        "year": 2020,
        "tags": ["sql", "intro"],
        "author": {"name": "Ada"},
        "rating": 4.5,
        "draft": False,
    },
    "b": {
        "topic": "db",
        "year": 2023,
        "tags": ["vector"],
        "author": {"name": "O'Brien"},
        "rating": 3,
    },
    "c": {"topic": "ml", "year": "2021", "tags": [], "author": {"name": "Grace"}, "draft": True},
    "d": {"topic": "ml", "year": 2024, "note": None, "title": "Vector search 101"},
    "e": {"topic": "Db", "id": "42", "entity_id": "meta-entity"},
}
ENTITY = {"a": ("doc1", 0), "b": ("doc1", 1), "c": ("doc2", 0), "d": ("d", 0), "e": ("e", 0)}
ALL = "abcde"

CASES: list[tuple[dict[str, Any], str]] = [
    ({}, ALL),
    ({"topic": "db"}, "ab"),
    ({"topic": {"$eq": "db"}}, "ab"),
    ({"topic": {"$ne": "db"}}, "cde"),
    ({"year": 2020}, "a"),
    ({"year": "2021"}, "c"),
    ({"year": 2021}, ""),  # typed: the number 2021 is not the string "2021"
    ({"year": {"$gt": 2020}}, "bd"),  # the string "2021" is not compared with numbers
    ({"year": {"$gte": 2020, "$lt": 2024}}, "ab"),
    ({"year": {"$lte": 2020.0}}, "a"),
    ({"year": {"$gt": "2020"}}, "c"),
    ({"year": {"$between": [2021, 2023]}}, "b"),
    ({"year": {"$in": [2020, 2024]}}, "ad"),
    ({"year": {"$in": []}}, ""),
    ({"year": {"$nin": [2020]}}, "bcde"),  # missing keys match $nin, as in MongoDB
    ({"year": {"$nin": []}}, ALL),
    ({"tags": {"$contains": "sql"}}, "a"),
    ({"tags": {"$contains": ["intro", "sql"]}}, "a"),
    ({"tags": {"$contains": "nope"}}, ""),
    ({"tags": ["vector"]}, "b"),  # list equality is exact, not containment
    ({"tags": []}, "c"),
    ({"tags": {"$exists": True}}, "abc"),
    ({"tags": {"$exists": False}}, "de"),
    ({"note": {"$exists": True}}, "d"),  # a null value still exists
    ({"note": None}, "d"),
    ({"author.name": "O'Brien"}, "b"),
    ({"author.name": {"$eq": "O'Brien"}}, "b"),
    ({"author.name": {"$in": ["Ada", "O'Brien"]}}, "ab"),
    ({"author.name": {"$like": "%race"}}, "c"),
    ({"author.name": {"$exists": True}}, "abc"),
    ({"author": {"name": "Ada"}}, "a"),
    ({"topic": {"$ilike": "DB"}}, "abe"),
    ({"title": {"$ilike": "%VECTOR%"}}, "d"),
    ({"rating": {"$gte": 4}}, "a"),
    ({"rating": 3}, "b"),
    ({"draft": False}, "a"),
    ({"draft": True}, "c"),
    ({"draft": {"$ne": True}}, "abde"),
    ({"id": "42"}, "e"),
    ({"id": 42}, ""),
    ({"$or": [{"topic": "ml"}, {"year": 2020}]}, "acd"),
    ({"$and": [{"topic": "db"}, {"year": {"$gt": 2020}}]}, "b"),
    ({"$not": {"topic": "db"}}, "cde"),
    ({"topic": {"$not": {"$eq": "db"}}}, "cde"),
    ({"$or": [{"$and": [{"topic": "ml"}, {"$not": {"draft": True}}]}, {"id": "42"}]}, "de"),
    ({"topic": "db", "year": 2023}, "b"),
    ({"entity_id": "doc1"}, "ab"),  # a real column, not the metadata key of chunk "e"
    ({"entity_id": {"$in": ["doc1", "doc2"]}}, "abc"),
    ({"entity_id": {"$nin": ["doc1"]}}, "cde"),
    ({"entity_id": {"$like": "doc%"}}, "abc"),
    ({"chunk_index": {"$gt": 0}}, "b"),
    ({"chunk_index": {"$between": [0, 0]}}, "acde"),
    ({"chunk_id": {"$in": []}}, ""),
    ({"chunk_id": {"$ne": "a"}}, "bcde"),
    ({"topic'; DROP TABLE x; --": "db"}, ""),
    ({"topic": "db'); DELETE FROM t; --"}, ""),
]


def _chunks() -> list[Chunk]:
    return [
        Chunk(
            chunk_id=cid,
            entity_id=ENTITY[cid][0],
            chunk_index=ENTITY[cid][1],
            content=f"chunk {cid}",
            embedding=[1.0, float(i), 0.5],
            metadata=meta,
        )
        for i, (cid, meta) in enumerate(METADATA.items())
    ]


@pytest.fixture
def filtered_store(make_store: StoreFactory) -> ChunkStore:
    store = make_store()
    store.upsert(_chunks())
    return store


@pytest.mark.parametrize(("filter", "expected"), CASES, ids=[str(f) for f, _ in CASES])
async def test_filter_selects(
    filtered_store: ChunkStore, api: Api, filter: dict[str, Any], expected: str
) -> None:
    hits = await api(filtered_store, "search", [1.0, 1.0, 1.0], k=10, filter=filter)
    assert sorted(h.chunk.chunk_id for h in hits) == list(expected)
    assert await api(filtered_store, "count", filter) == len(expected)


async def test_delete_where_removes_only_matches(filtered_store: ChunkStore, api: Api) -> None:
    assert await api(filtered_store, "delete_where", {"author.name": "O'Brien"}) == 1
    assert sorted(c.chunk_id for c in filtered_store.get(list(ALL))) == ["a", "c", "d", "e"]
    with pytest.raises(FilterError):
        await api(filtered_store, "delete_where", {"topic": {"$regex": "x"}})
    assert filtered_store.count() == 4


BAD: list[tuple[Any, str]] = [
    ({"topic": {"$regex": "x"}}, "got '$regex'"),
    ({"$nor": []}, "got '$nor'"),
    ({"$and": "x"}, "expected a list after $and"),
    ({"$and": []}, "non-empty list"),
    ({"$or": [1]}, "expected a filter dict"),
    ({"$not": [1]}, "expected a filter dict"),
    ({"$not": []}, "non-empty list of filters after $not"),
    ({"$not": True}, "expected a filter dict"),
    ({"year": {"$in": 5}}, "expected a list after $in"),
    ({"year": {"$in": [[1]]}}, "expected a str, int, float, bool or None"),
    ({"year": {"$between": [1]}}, "[low, high]"),
    ({"year": {"$between": [1, "z"]}}, "bounds of one type"),
    ({"year": {"$gt": [1]}}, "number or a string"),
    ({"year": {"$gt": True}}, "number or a string"),
    ({"topic": {"$eq": float("nan")}}, "finite"),
    ({"a..b": 1}, "non-empty key parts"),
    ({"": 1}, "non-empty strings"),
    ({"topic": {"$like": 5}}, "pattern string"),
    ({"topic": {"$exists": "yes"}}, "true or false"),
    ({"topic": {"$not": "db"}}, "operator dict after $not"),
    ({"a": {"$eq": 1, "b": 2}}, "a mix"),
    ({"chunk_index": "1"}, "expected int, got str"),
    ({"entity_id": {"$in": [1]}}, "expected str, got int"),
    ({"chunk_index": {"$contains": 1}}, "applies to the column"),
    ({"topic": "a\x00b"}, "NUL"),
    ({"topic": {"$eq": object()}}, "expected a str, int, float, bool or None"),
    ("topic", "expected a filter dict"),
]


@pytest.mark.parametrize(("filter", "message"), BAD, ids=[str(f) for f, _ in BAD])
def test_malformed_filters_raise_typed_errors(filter: Any, message: str) -> None:
    collection = Collection("docs", 3)
    with pytest.raises(FilterError, match=message.replace("$", r"\$").replace("[", r"\[")):
        compile_filter(filter, collection.table)


def _sql(filter: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    compiled = compile_filter(filter, Collection("docs", 3).table).compile(dialect=PG)
    return str(compiled), dict(compiled.params)


def test_equality_and_in_compile_to_gin_containment() -> None:
    sql, params = _sql({"topic": "db", "author.name": {"$in": ["Ada", "O'Brien"]}})
    assert sql.count("@>") == 3
    assert {"topic": "db"} in params.values()
    assert {"author": {"name": "O'Brien"}} in params.values()


def test_keys_and_values_are_bound_never_inlined() -> None:
    sql, params = _sql({"weird'key": {"$gt": 5}, "other": {"$like": "x'%"}})
    assert "weird" not in sql and "x'" not in sql
    assert ["weird'key"] in [
        list(v) if isinstance(v, (list, tuple)) else v for v in params.values()
    ] or ("weird'key" in params.values())


def test_no_filter_is_true() -> None:
    assert str(compile_filter(None, Collection("docs", 3).table).compile()) == "true"
    assert isinstance(compile_filter({"a": 1}, Collection("docs", 3).table), sa.ColumnElement)
