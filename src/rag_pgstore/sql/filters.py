"""Compile Mongo-style metadata filters into SQLAlchemy expressions.

The language is the one LangChain users already write::

    {"topic": "db"}                                  # equality
    {"year": {"$gte": 2020, "$lt": 2024}}            # several operators on one field: AND
    {"$or": [{"lang": "en"}, {"tags": {"$contains": "intro"}}]}
    {"author.name": {"$in": ["Ada", "O'Brien"]}}     # dots reach into nested objects

Keys and values are always bound parameters. Values are compared with their JSON type: ``2020``
does not match ``"2020"``. Equality and ``$in`` compile to ``metadata @> ...`` so the GIN index
on ``metadata`` serves them. ``$ne`` and ``$nin`` also match chunks that lack the key, as in
MongoDB; add ``{"key": {"$exists": true}}`` to exclude those. The keys ``chunk_id``,
``entity_id``, ``chunk_index`` and ``total_chunks`` address the table's own columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.sql.elements import ColumnElement

from rag_pgstore.errors import FilterError, show
from rag_pgstore.types import Filter

__all__ = ["COLUMN_KEYS", "MAX_DEPTH", "OPERATORS", "compile_filter"]

Expr = ColumnElement[bool]

# Filter keys that address real columns, with the Python type their values must have.
COLUMN_KEYS: dict[str, type] = {
    "chunk_id": str,
    "entity_id": str,
    "chunk_index": int,
    "total_chunks": int,
}
OPERATORS = (
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$between",
    "$like",
    "$ilike",
    "$exists",
    "$contains",
    "$not",
)
LOGICAL = ("$and", "$or", "$not")
# How deep logical operators, $not inside a field and filter values may nest. Far beyond any
# real filter; it keeps a hostile one from exhausting the stack.
MAX_DEPTH = 32
# Up to this many values, $in/$nin compile to containments the GIN index serves; more become
# one array parameter compared with = ANY (no 65,535-parameter ceiling, hashed by the server).
IN_CONTAINS_MAX = 32


def compile_filter(filter: Filter | None, table: sa.Table) -> Expr:
    """Return a boolean SQL expression for ``filter`` over ``table`` (``true`` for no filter)."""
    if filter is None:
        return sa.true()
    return _Compiler(table).document(filter, 0)


def _scalar(value: object, where: str) -> object:
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, str) and "\x00" in value:
            raise FilterError(
                f"expected a value without NUL characters, got {show(value)} ({where})"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"expected a finite number, got {show(value)} ({where})")
        return value
    kind = type(value).__name__
    raise FilterError(
        f"expected a str, int, float, bool or None, got {kind} {show(value)} ({where})"
    )


def _json_value(value: object, where: str, depth: int = 0) -> object:
    """Check a value that may also be a list or object (for equality and $contains)."""
    if depth > MAX_DEPTH:
        raise FilterError(f"expected a filter value nested at most {MAX_DEPTH} deep ({where})")
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, where, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v, where, depth + 1) for v in value]
    return _scalar(value, where)


def _list(value: object, op: str, where: str) -> list[object]:
    if not isinstance(value, (list, tuple)):
        raise FilterError(
            f"expected a list after {op}, got {type(value).__name__} {show(value)} ({where})"
        )
    return list(value)


def _negate(expr: Expr) -> Expr:
    """``NOT expr``, where a NULL (a comparison with a missing key) counts as no match.

    Without the ``coalesce``, ``NOT (x > 5)`` would be NULL, so no match, for a chunk without
    ``x``; as in MongoDB and llama-index-core, it matches.
    """
    return sa.not_(sa.func.coalesce(expr, sa.false()))


def _nest(path: Sequence[str], value: object) -> object:
    for key in reversed(path):
        value = {key: value}
    return value


class _Compiler:
    def __init__(self, table: sa.Table) -> None:
        self.metadata = table.c["metadata"]
        self.columns = {key: table.c[key] for key in COLUMN_KEYS}

    def document(self, filter: object, depth: int) -> Expr:
        if depth > MAX_DEPTH:
            raise FilterError(f"expected a filter nested at most {MAX_DEPTH} deep")
        if not isinstance(filter, Mapping):
            raise FilterError(f"expected a filter dict, got {type(filter).__name__} {show(filter)}")
        clauses = [self.clause(key, value, depth) for key, value in filter.items()]
        return sa.and_(sa.true(), *clauses) if len(clauses) != 1 else clauses[0]

    def clause(self, key: object, value: object, depth: int) -> Expr:
        if not isinstance(key, str) or not key:
            raise FilterError(f"expected filter keys to be non-empty strings, got {show(key)}")
        if key in ("$and", "$or"):
            parts = _list(value, key, key)
            if not parts:
                raise FilterError(f"expected a non-empty list of filters after {key}, got []")
            exprs = [self.document(part, depth + 1) for part in parts]
            return sa.and_(*exprs) if key == "$and" else sa.or_(*exprs)
        if key == "$not":
            if isinstance(value, (list, tuple)):
                # langchain-postgres reads a list as "none of these match".
                if not value:
                    raise FilterError("expected a non-empty list of filters after $not, got []")
                return sa.and_(*(_negate(self.document(part, depth + 1)) for part in value))
            return _negate(self.document(value, depth + 1))
        if key.startswith("$"):
            raise FilterError(
                f"expected one of {', '.join(LOGICAL)} at the top of a filter, got {show(key)}"
                f"; field operators go inside a field: {{'field': {{{show(key)}: ...}}}}"
            )
        return self.field(key, value, depth)

    def field(self, key: str, condition: object, depth: int) -> Expr:
        if isinstance(condition, Mapping) and any(str(op).startswith("$") for op in condition):
            if not all(str(op).startswith("$") for op in condition):
                raise FilterError(
                    f"expected either operators or a plain value for {show(key)}, "
                    f"got a mix: {show(condition)}"
                )
            exprs = [
                self.operator(key, str(op), operand, depth) for op, operand in condition.items()
            ]
            return sa.and_(*exprs) if len(exprs) != 1 else exprs[0]
        return self.operator(key, "$eq", condition, depth)

    def operator(self, key: str, op: str, operand: object, depth: int) -> Expr:
        where = f"{show(key)} {op}"
        if op == "$not":
            if not isinstance(operand, Mapping):
                raise FilterError(
                    f"expected an operator dict after $not, got {show(operand)} ({where})"
                )
            if depth >= MAX_DEPTH:
                raise FilterError(f"expected a filter nested at most {MAX_DEPTH} deep ({where})")
            return _negate(self.field(key, operand, depth + 1))
        if op not in OPERATORS:
            raise FilterError(
                f"expected one of {', '.join(OPERATORS)}, got {show(op)} (field {show(key)})"
            )
        if key in self.columns:
            return _column_operator(self.columns[key], COLUMN_KEYS[key], op, operand, where)
        path = key.split(".")
        if not all(path):
            raise FilterError(f"expected dot-separated non-empty key parts, got {show(key)}")
        return self.metadata_operator(path, op, operand, where)

    def contains(self, path: Sequence[str], value: object) -> Expr:
        return self.metadata.contains(sa.bindparam(None, _nest(path, value), type_=pg.JSONB))

    def metadata_operator(self, path: list[str], op: str, operand: object, where: str) -> Expr:
        node = self.metadata[path[0]] if len(path) == 1 else self.metadata[tuple(path)]
        if op in ("$eq", "$ne"):
            value = _json_value(operand, where)
            if isinstance(value, (dict, list)):
                # Containment would also match supersets; exact structure needs equality.
                expr: Expr = node == sa.bindparam(None, value, type_=pg.JSONB)
                return expr if op == "$eq" else sa.not_(sa.func.coalesce(expr, False))
            expr = self.contains(path, value)
            return expr if op == "$eq" else sa.not_(expr)
        if op in ("$in", "$nin"):
            values = [_scalar(v, where) for v in _list(operand, op, where)]
            if len(values) <= IN_CONTAINS_MAX:
                expr = sa.or_(sa.false(), *(self.contains(path, v) for v in values))
            else:
                # Same matches as the containments (a scalar contained at a path is a scalar
                # equal to it there); a missing key compares as NULL, which is no match.
                array = sa.bindparam(None, values, type_=pg.ARRAY(pg.JSONB))
                expr = sa.func.coalesce(node == sa.any_(array), False)
            return expr if op == "$in" else sa.not_(expr)
        if op == "$contains":
            value = _json_value(operand, where)
            return self.contains(path, value if isinstance(value, list) else [value])
        if op == "$exists":
            if not isinstance(operand, bool):
                raise FilterError(f"expected true or false, got {show(operand)} ({where})")
            expr = self.metadata.has_key(path[0]) if len(path) == 1 else node.is_not(None)
            return expr if operand else sa.not_(expr)
        if op in ("$like", "$ilike"):
            if not isinstance(operand, str):
                raise FilterError(f"expected a pattern string, got {show(operand)} ({where})")
            _scalar(operand, where)
            text: ColumnElement[str] = node.astext
            return text.like(operand) if op == "$like" else text.ilike(operand)
        if op == "$between":
            low, high = _bounds(operand, where)
            return sa.and_(_compare(node, "$gte", low), _compare(node, "$lte", high))
        return _compare(node, op, _ordered(operand, where))


def _ordered(value: object, where: str) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FilterError(
            f"expected a number or a string to compare with, got {show(value)} ({where})"
        )
    return _scalar(value, where)


def _bounds(operand: object, where: str) -> tuple[object, object]:
    bounds = _list(operand, "$between", where)
    if len(bounds) != 2:
        raise FilterError(f"expected [low, high] after $between, got {show(operand)} ({where})")
    low, high = (_ordered(v, where) for v in bounds)
    if isinstance(low, str) != isinstance(high, str):
        raise FilterError(f"expected bounds of one type, got {show(operand)} ({where})")
    return low, high


_COMPARE: dict[str, Callable[[Any, Any], Expr]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _compare(node: Any, op: str, value: object) -> Expr:
    # jsonb orders values of different JSON types by type; restrict to the value's own type so
    # {"$gt": 5} never matches the string "7".
    json_type = "string" if isinstance(value, str) else "number"
    return sa.and_(
        sa.func.jsonb_typeof(node) == json_type,
        _COMPARE[op](node, sa.bindparam(None, value, type_=pg.JSONB)),
    )


def _column_operator(column: Any, kind: type, op: str, operand: object, where: str) -> Expr:
    def typed(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, kind):
            raise FilterError(
                f"expected {kind.__name__}, got {type(value).__name__} {show(value)} ({where})"
            )
        return _scalar(value, where)

    if op == "$eq":
        return column == typed(operand)  # type: ignore[no-any-return]
    if op == "$ne":
        return column != typed(operand)  # type: ignore[no-any-return]
    if op in ("$in", "$nin"):
        # One array parameter rather than one parameter per value: no 65,535-parameter ceiling.
        values = sa.bindparam(
            None, [typed(v) for v in _list(operand, op, where)], type_=pg.ARRAY(column.type)
        )
        return column == sa.any_(values) if op == "$in" else column != sa.all_(values)  # type: ignore[no-any-return]
    if op == "$exists":
        if not isinstance(operand, bool):
            raise FilterError(f"expected true or false, got {show(operand)} ({where})")
        return sa.true() if operand else sa.false()
    if op in ("$like", "$ilike") and kind is str:
        pattern = typed(operand)
        return column.like(pattern) if op == "$like" else column.ilike(pattern)  # type: ignore[no-any-return]
    if op == "$between":
        bounds = _list(operand, op, where)
        if len(bounds) != 2:
            raise FilterError(f"expected [low, high] after $between, got {show(operand)} ({where})")
        return column.between(typed(bounds[0]), typed(bounds[1]))  # type: ignore[no-any-return]
    if op in _COMPARE:
        return _COMPARE[op](column, typed(operand))
    raise FilterError(f"expected an operator that applies to the column, got {op} ({where})")
