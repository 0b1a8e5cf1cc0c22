"""The embedding cache: vectors by (model, content hash), in Postgres next to the chunks.

Identical text is never embedded twice by the same model, across documents, runs and
processes. Entries are written in their own short transaction right after embedding, so an
ingestion killed half-way keeps every vector it paid for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.dialects import postgresql as pg

from rag_pgstore.reads import to_floats
from rag_pgstore.steps import Execute, Fetch, Plan

__all__ = ["cache_table", "lookup", "remember", "setup"]

CACHE_NAME = "rag_pgstore_embedding_cache"
REMEMBER_ROWS = 1_000


def cache_table(schema: str) -> sa.Table:
    return sa.Table(
        CACHE_NAME,
        sa.MetaData(),
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("content_hash", sa.Text, primary_key=True),
        sa.Column("embedding", VECTOR(), nullable=False),  # no fixed size: any model's vectors
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=schema,
    )


def setup(schema: str) -> Plan[None]:
    yield Execute(sa.schema.CreateTable(cache_table(schema), if_not_exists=True))


def lookup(schema: str, model: str, hashes: Sequence[str]) -> Plan[dict[str, list[float]]]:
    table = cache_table(schema)
    rows = yield Fetch(
        sa.select(table.c.content_hash, table.c.embedding).where(
            table.c.model == model,
            table.c.content_hash
            == sa.any_(sa.bindparam(None, list(hashes), type_=pg.ARRAY(sa.Text))),
        )
    )
    return {row[0]: to_floats(row[1]) or [] for row in rows}


def remember(schema: str, model: str, vectors: Mapping[str, Sequence[float]]) -> Plan[None]:
    if not vectors:
        return
    table = cache_table(schema)
    items = list(vectors.items())
    # A multi-row VALUES binds three parameters a row: go 1,000 rows a statement, far below
    # PostgreSQL's 65,535-parameter ceiling however many texts one batch embedded.
    for start in range(0, len(items), REMEMBER_ROWS):
        values = [
            {"model": model, "content_hash": h, "embedding": list(v)}
            for h, v in items[start : start + REMEMBER_ROWS]
        ]
        yield Execute(pg.insert(table).values(values).on_conflict_do_nothing())
