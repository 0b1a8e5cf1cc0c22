"""Translate LlamaIndex ``MetadataFilters`` into the core's filter language.

The core compiles the result to SQL with every key and value bound, so this module only maps
operators. Values keep the type LlamaIndex gives them: ``"42"`` stays a string.
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
        return {"$or": [{key: {"$exists": False}}, {key: None}, {key: []}]}
    raise FilterError(f"expected a FilterOperator this store supports, got {op!r}")


def translate(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """The core filter for ``filters``; ``None`` when there is nothing to filter on."""
    if filters is None or not filters.filters:
        return None
    parts = [translate(f) if isinstance(f, MetadataFilters) else _one(f) for f in filters.filters]
    clauses = [p if p is not None else {} for p in parts]
    condition = filters.condition or FilterCondition.AND
    if condition is FilterCondition.AND:
        return {"$and": clauses}
    if condition is FilterCondition.OR:
        return {"$or": clauses}
    if condition is FilterCondition.NOT:
        return {"$not": {"$and": clauses}}
    raise FilterError(f"expected FilterCondition AND, OR or NOT, got {condition!r}")
