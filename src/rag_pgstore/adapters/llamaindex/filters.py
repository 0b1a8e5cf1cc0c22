"""Translate LlamaIndex ``MetadataFilters`` into the core's filter language.

The core compiles the result to SQL with every key and value bound, so this module only maps
operators. Values keep the type LlamaIndex gives them: ``"42"`` stays a string.

The oracle is llama-index-core's own in-memory filter (``build_metadata_filter_fn``):
``FilterCondition.NOT`` means none of its filters match, ``IS_EMPTY`` matches a missing key,
``None``, ``""`` and ``[]``. Where core has no answer we chose the one that never widens: a
nested ``MetadataFilters`` with no filters in it matches nothing (core refuses nesting), and
in a delete it is refused outright.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from rag_pgstore.errors import FilterError
from rag_pgstore.sql.filters import MAX_DEPTH

__all__ = ["ENTITY_KEYS", "translate"]

# LlamaIndex's names for a node's source document: they address the indexed entity_id column.
ENTITY_KEYS = frozenset({"ref_doc_id", "doc_id", "document_id"})

_SIMPLE = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.CONTAINS: "$contains",
}
_NOTHING: dict[str, Any] = {"chunk_id": {"$in": []}}


def _like(value: object) -> str:
    if not isinstance(value, str):
        raise FilterError(f"expected a string for a text match, got {value!r}")
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _one(f: MetadataFilter) -> dict[str, Any]:
    key = "entity_id" if f.key in ENTITY_KEYS else f.key
    op, value = f.operator, f.value
    if op in _SIMPLE:
        return {key: {_SIMPLE[op]: value}}
    if op is FilterOperator.ANY:
        values = value if isinstance(value, list) else [value]
        return {"$or": [{key: {"$contains": v}} for v in values]} if values else _NOTHING
    if op is FilterOperator.ALL:
        return {key: {"$contains": value if isinstance(value, list) else [value]}}
    if op is FilterOperator.TEXT_MATCH:
        return {key: {"$like": _like(value)}}
    if op is FilterOperator.TEXT_MATCH_INSENSITIVE:
        return {key: {"$ilike": _like(value)}}
    if op is FilterOperator.IS_EMPTY:
        return {"$or": [{key: {"$exists": False}}, {key: None}, {key: ""}, {key: []}]}
    raise FilterError(f"expected a FilterOperator this store supports, got {op!r}")


def translate(filters: MetadataFilters | None, *, strict: bool = False) -> dict[str, Any] | None:
    """The core filter for ``filters``; ``None`` when there is nothing to filter on.

    ``strict`` (for deletes) refuses a nested group with no filters instead of reading it as
    "nothing".
    """
    if filters is None or not filters.filters:
        return None
    return _group(filters, strict, 0)


def _group(filters: MetadataFilters, strict: bool, depth: int) -> dict[str, Any]:
    if depth >= MAX_DEPTH:
        raise FilterError(f"expected MetadataFilters nested at most {MAX_DEPTH} deep")
    if not filters.filters:
        if strict:
            raise FilterError(
                "expected every nested MetadataFilters to hold a filter, got an empty one; "
                "remove it (a delete never guesses what an empty group means)"
            )
        return _NOTHING
    clauses = [
        _group(f, strict, depth + 1) if isinstance(f, MetadataFilters) else _one(f)
        for f in filters.filters
    ]
    condition = filters.condition or FilterCondition.AND
    if condition is FilterCondition.AND:
        return {"$and": clauses}
    if condition is FilterCondition.OR:
        return {"$or": clauses}
    if condition is FilterCondition.NOT:
        return {"$not": clauses}  # none of them matches
    raise FilterError(f"expected FilterCondition AND, OR or NOT, got {condition!r}")
