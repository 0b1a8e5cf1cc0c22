"""The baseline every store is measured against: what a psycopg + pgvector user writes."""

from __future__ import annotations

from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from benchmarks.ingest import dsn
from rag_pgstore import ChunkStore
from rag_pgstore.types import DEFAULT_EF_SEARCH

__all__ = ["RAW", "raw_sql"]

RAW = "raw SQL (psycopg + pgvector)"


def raw_sql(store: ChunkStore) -> tuple[psycopg.Connection[Any], sql.Composed]:
    """A connection with pgvector's adapters, and the top-10 query over the store's table.

    The connection searches HNSW with the store's ``ef_search`` (a session ``SET``, once), so
    that both sides do the same work and only the code around the query differs.
    """
    conn = psycopg.connect(dsn(store), autocommit=True)
    register_vector(conn)
    conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(DEFAULT_EF_SEARCH),))
    statement = sql.SQL(
        "SELECT chunk_id, content, metadata, embedding <=> %(q)s AS distance FROM {} "
        "ORDER BY embedding <=> %(q)s LIMIT 10"
    ).format(sql.Identifier(store.collection.name))
    return conn, statement
