"""The filter compiler against a slow Python evaluator of the same language, on random filters
(equality, $ne, $in/$nin, comparisons, $between, $like/$ilike, $exists, $contains, the
chunk_id column, $and/$or/$not of filters and of lists).

``evaluate`` below is the filter language written out plainly (docs/guide.md, *Filters*):
JSON-typed equality, ``$ne``/``$nin``/``$not`` matching a missing key, comparisons within one
JSON type, ``$exists`` true for a key holding null. hypothesis draws filters over a small
universe of keys and values, and every one must select the same rows in PostgreSQL as in
Python.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from rag_pgstore import Chunk, ChunkStore

MISSING = object()
SCALARS: list[Any] = [0, 1, 2, 1.5, "p", "q", "pq", True, False, None]
VALUES: list[Any] = [*SCALARS, [0, 1], ["p"], [], {"x": 1}]
KEYS = ["a", "b", "n.x"]


def rows() -> dict[str, dict[str, Any]]:
    """Every combination of a few values under ``a``, ``b`` and ``n.x`` (missing included)."""
    out: dict[str, dict[str, Any]] = {}
    choices = [MISSING, *VALUES]
    for i, (a, b, x) in enumerate(itertools.product(choices[:9], choices[::2], choices[::3])):
        metadata: dict[str, Any] = {}
        if a is not MISSING:
            metadata["a"] = a
        if b is not MISSING:
            metadata["b"] = b
        if x is not MISSING:
            metadata["n"] = {"x": x}
        out[f"r{i}"] = metadata
    return out


ROWS = rows()


def lookup(metadata: dict[str, Any], key: str) -> Any:
    value: Any = metadata
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def json_equal(a: Any, b: Any) -> bool:
    return json_type(a) == json_type(b) and a == b


LIKE = {"p%": r"p.*", "%q": r".*q", "_q": r".q", "pq": r"pq"}  # only strings can match these


def operator(op: str, value: Any, operand: Any) -> bool:
    if op == "$eq":
        return value is not MISSING and json_equal(value, operand)
    if op == "$ne":
        return not operator("$eq", value, operand)
    if op == "$in":
        return any(operator("$eq", value, v) for v in operand)
    if op == "$nin":
        return not operator("$in", value, operand)
    if op == "$exists":
        return bool((value is not MISSING) == operand)
    if op == "$contains":
        return isinstance(value, list) and any(json_equal(v, operand) for v in value)
    if op == "$between":
        low, high = operand
        return operator("$gte", value, low) and operator("$lte", value, high)
    if op in ("$like", "$ilike"):
        if not isinstance(value, str):
            return False
        flags = re.IGNORECASE if op == "$ilike" else 0
        return re.fullmatch(LIKE[operand.lower()], value, flags) is not None
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if value is MISSING or json_type(value) != json_type(operand):
            return False
        return bool(
            {
                "$gt": value > operand,
                "$gte": value >= operand,
                "$lt": value < operand,
                "$lte": value <= operand,
            }[op]
        )
    raise AssertionError(op)


def evaluate(filter: dict[str, Any], metadata: dict[str, Any], chunk_id: str) -> bool:
    results = []
    for key, condition in filter.items():
        if key == "$and":
            results.append(all(evaluate(f, metadata, chunk_id) for f in condition))
        elif key == "$or":
            results.append(any(evaluate(f, metadata, chunk_id) for f in condition))
        elif key == "$not":
            parts = condition if isinstance(condition, list) else [condition]
            results.append(not any(evaluate(f, metadata, chunk_id) for f in parts))
        elif key == "chunk_id":  # the column, not a metadata key
            results.append(chunk_id in condition["$in"])
        elif isinstance(condition, dict) and condition and all(k[0] == "$" for k in condition):
            value = lookup(metadata, key)
            results.append(all(operator(op, value, arg) for op, arg in condition.items()))
        else:
            results.append(operator("$eq", lookup(metadata, key), condition))
    return all(results)


ordered = hs.sampled_from([0, 1, 2, 1.5, "p", "pq", "q"])
fields = hs.one_of(
    hs.tuples(hs.sampled_from(["$eq", "$ne"]), hs.sampled_from(VALUES)),
    hs.tuples(hs.sampled_from(["$in", "$nin"]), hs.lists(hs.sampled_from(SCALARS), max_size=4)),
    hs.tuples(hs.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ordered),
    hs.tuples(hs.just("$exists"), hs.booleans()),
    hs.tuples(hs.just("$contains"), hs.sampled_from(SCALARS)),
    hs.tuples(
        hs.just("$between"),
        hs.one_of(
            hs.lists(hs.sampled_from([0, 1, 1.5, 2]), min_size=2, max_size=2),
            hs.lists(hs.sampled_from(["p", "pq", "q"]), min_size=2, max_size=2),
        ),
    ),
    hs.tuples(hs.just("$like"), hs.sampled_from(sorted(LIKE))),
    hs.tuples(hs.just("$ilike"), hs.sampled_from(["P%", "%Q", "_Q", "PQ"])),
)
leaf = hs.builds(
    lambda key, op_arg, bare: (
        {key: op_arg[1]} if bare and op_arg[0] == "$eq" else {key: {op_arg[0]: op_arg[1]}}
    ),
    hs.sampled_from(KEYS),
    fields,
    hs.booleans(),
)
ids = hs.builds(
    lambda chosen: {"chunk_id": {"$in": chosen}},
    hs.lists(hs.sampled_from([f"r{i}" for i in range(12)]), max_size=5),
)
filters = hs.recursive(
    hs.one_of(leaf, ids),
    lambda inner: hs.one_of(
        hs.builds(lambda parts: {"$and": parts}, hs.lists(inner, min_size=1, max_size=3)),
        hs.builds(lambda parts: {"$or": parts}, hs.lists(inner, min_size=1, max_size=3)),
        hs.builds(lambda part: {"$not": part}, inner),
        hs.builds(lambda parts: {"$not": parts}, hs.lists(inner, min_size=1, max_size=2)),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def store(engines: Any) -> ChunkStore:
    store = ChunkStore(engines[0], engines[1], collection="filter_properties", dim=2)
    store.setup()
    store.clear()
    store.upsert(
        [
            Chunk(chunk_id=chunk_id, content="", embedding=[1.0, 0.0], metadata=metadata)
            for chunk_id, metadata in ROWS.items()
        ]
    )
    return store


def test_the_evaluator_sees_every_kind_of_row() -> None:
    assert len(ROWS) > 100
    assert sum(1 for m in ROWS.values() if "a" not in m) > 0


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(filter=filters)
def test_the_database_selects_what_the_evaluator_selects(
    store: ChunkStore, filter: dict[str, Any]
) -> None:
    expected = sorted(chunk_id for chunk_id, m in ROWS.items() if evaluate(filter, m, chunk_id))
    got = sorted(c.chunk_id for c in store.get_where(filter))
    assert got == expected, filter
