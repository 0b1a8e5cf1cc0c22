"""Statements that ask the catalog: versions, indexes, whether a table has an ANN index, and the
session settings a one-round-trip read needs.

Pure builders: none of them touches a connection.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from rag_pgstore.schema import Collection
from rag_pgstore.sql.search import compiled

__all__ = [
    "PG_ATTRIBUTE",
    "PG_CONSTRAINT",
    "PG_EXTENSION",
    "PG_TS_CONFIG",
    "ann_indexed",
    "extension_version",
    "index_leaves",
    "index_names",
    "server_version",
    "set_session",
]

PG_EXTENSION = sa.table(
    "pg_extension", sa.column("extname"), sa.column("extversion"), schema="pg_catalog"
)
PG_CONSTRAINT = sa.table(
    "pg_constraint",
    sa.column("conname"),
    sa.column("conrelid"),
    sa.column("contype"),
    schema="pg_catalog",
)
PG_TS_CONFIG = sa.table("pg_ts_config", sa.column("cfgname"), schema="pg_catalog")
PG_ATTRIBUTE = sa.table(
    "pg_attribute",
    sa.column("attrelid"),
    sa.column("attname"),
    sa.column("attnum"),
    sa.column("attisdropped"),
    schema="pg_catalog",
)


@functools.lru_cache(maxsize=64)
def set_session(settings: tuple[tuple[str, str], ...]) -> tuple[str, dict[str, Any]]:
    """``set_config(name, value, false)`` for each setting, compiled for the driver's Read.

    Session-level (not ``SET LOCAL``): a Read runs outside a transaction. Names and values
    are bound parameters.
    """
    statement = sa.select(*(sa.func.set_config(name, value, False) for name, value in settings))
    sql, params = compiled(statement, bound=())
    return sql, dict(params)


PG_INDEXES = sa.table(
    "pg_indexes",
    sa.column("schemaname"),
    sa.column("tablename"),
    sa.column("indexname"),
    sa.column("indexdef"),
    schema="pg_catalog",
)


@functools.lru_cache(maxsize=64)
def ann_indexed(schema: str, table: str) -> tuple[str, dict[str, Any]]:
    """Whether ``schema.table`` has an HNSW or IVFFlat index, compiled: one row, ``indexed``.

    Asked of the catalog, which every role may read (a reader granted only SELECT on the
    table cannot read the registry), and which also sees indexes made by hand.
    """
    v = PG_INDEXES.c
    found = sa.exists().where(
        v.schemaname == schema,
        v.tablename == table,
        v.indexdef.op("~")(" USING (hnsw|ivfflat) "),
    )
    sql, params = compiled(sa.select(found.label("indexed")), bound=())
    return sql, dict(params)


def server_version() -> sa.Select[Any]:
    """The server's version string: one row."""
    return sa.select(sa.func.current_setting("server_version"))


def extension_version(name: str) -> sa.Select[Any]:
    """The installed version of extension ``name``: one row, or none."""
    return sa.select(PG_EXTENSION.c.extversion).where(PG_EXTENSION.c.extname == name)


PG_INHERITS = sa.table(
    "pg_inherits", sa.column("inhrelid"), sa.column("inhparent"), schema="pg_catalog"
)
PG_CLASS = sa.table(
    "pg_class", sa.column("oid"), sa.column("relname"), sa.column("relkind"), schema="pg_catalog"
)


def index_leaves(schema: str, name: str) -> sa.Select[Any]:
    """The index ``schema.name`` itself when it is an index of one table, or, for the index
    of a partitioned collection, each partition's index (which hold the entries): one row
    of (oid, name) each, none when there is no such index."""
    index = sa.func.to_regclass(f"{schema}.{name}")
    k = PG_CLASS.c
    children = sa.select(PG_INHERITS.c.inhrelid).where(PG_INHERITS.c.inhparent == index)
    return sa.select(k.oid, k.relname).where(
        sa.or_(sa.and_(k.oid == index, k.relkind == "i"), k.oid.in_(children))
    )


def index_names(collection: Collection) -> sa.Select[Any]:
    """The names of the collection's indexes, in order."""
    v = PG_INDEXES.c
    return (
        sa.select(v.indexname)
        .where(v.schemaname == collection.schema, v.tablename == collection.name)
        .order_by(v.indexname)
    )
