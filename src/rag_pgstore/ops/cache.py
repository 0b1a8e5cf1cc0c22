"""The embedding cache: vectors by (model, dimension, content hash), in Postgres beside the chunks.

Identical text is never embedded twice by the same model at the same size, across documents,
runs and processes. The dimension is part of the key because one model name can serve several
sizes (a truncated Matryoshka embedding, a fake model in tests): a vector of the wrong size
is never handed back. Entries are written in their own short transaction right after
embedding, so an ingestion killed half-way keeps every vector it paid for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from pgvector.sqlalchemy import VECTOR
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg

from rag_pgstore.codec import binary_vectors
from rag_pgstore.driver.steps import Copy, Execute, Fetch, Plan, Read
from rag_pgstore.ops.lifecycle import setup_lock
from rag_pgstore.sql.catalog import PG_ATTRIBUTE
from rag_pgstore.sql.search import any_of, compiled

__all__ = ["CACHE_NAME", "cache_table", "lookup", "remember", "setup"]

CACHE_NAME = "rag_pgstore_embedding_cache"
REMEMBER_ROWS = 1_000


def cache_table(schema: str) -> sa.Table:
    return sa.Table(
        CACHE_NAME,
        sa.MetaData(),
        sa.Column("model", sa.Text, primary_key=True),
        # Computed from the vector, so it can never disagree with it, and a process still on
        # the version before the dimension was in the key keeps working during an upgrade.
        sa.Column(
            "dim",
            sa.Integer,
            sa.Computed(sa.func.vector_dims(sa.column("embedding")), persisted=True),
            primary_key=True,
        ),
        sa.Column("content_hash", sa.Text, primary_key=True),
        sa.Column("embedding", VECTOR(), nullable=False),  # no fixed size: any model's vectors
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=schema,
    )


def setup(schema: str) -> Plan[None]:
    """Create the cache table, or bring a cache keyed by model name alone up to date."""
    table = cache_table(schema)
    yield setup_lock()
    yield Execute(sa.schema.CreateTable(table, if_not_exists=True))
    a = PG_ATTRIBUTE.c
    found = yield Fetch(
        sa.select(a.attname).where(
            a.attrelid == sa.func.to_regclass(f"{schema}.{CACHE_NAME}"),
            a.attname == "dim",
            a.attnum > 0,
            sa.not_(a.attisdropped),
        )
    )
    if found:
        return
    # A cache from before the dimension was part of the key: keep its vectors, under their size.
    for ddl in (
        "ALTER TABLE %(fullname)s ADD COLUMN dim integer "
        "GENERATED ALWAYS AS (vector_dims(embedding)) STORED",
        "ALTER TABLE %(fullname)s DROP CONSTRAINT rag_pgstore_embedding_cache_pkey",
        "ALTER TABLE %(fullname)s ADD PRIMARY KEY (model, dim, content_hash)",
    ):
        # DDL() fills %(fullname)s with the table's quoted, schema-qualified name.
        yield Execute(sa.DDL(ddl).against(table))  # type: ignore[no-untyped-call]


def lookup(
    schema: str, model: str, dim: int, hashes: Sequence[str]
) -> Plan[dict[str, list[float]]]:
    """The cached ``dim``-sized vectors of ``model`` for ``hashes``, by hash."""
    table = cache_table(schema)
    query = sa.select(
        table.c.content_hash.label("hash"),
        # As an array of floats, which the driver reads without pgvector's types.
        sa.cast(table.c.embedding, pg.ARRAY(sa.REAL)).label("vector"),
    ).where(
        table.c.model == model,
        table.c.dim == dim,
        table.c.content_hash == any_of(list(hashes)),
    )
    sql_text, params = compiled(query, bound=())
    rows = yield Read(sql_text, dict(params))  # one round trip, outside a transaction
    return {row["hash"]: row["vector"] for row in rows}


def remember(schema: str, model: str, vectors: Mapping[str, Sequence[float]]) -> Plan[None]:
    """Keep ``vectors`` (by content hash); entries already there are left alone.

    Vectors of one size go by binary COPY into a temporary table and from there into the
    cache: written as text through ``INSERT ... VALUES``, formatting each float took a fifth
    of a pipeline run.
    """
    if not vectors:
        return
    table = cache_table(schema)
    items = sorted(vectors.items())  # one insertion order for every writer: no deadlocks
    if len({len(v) for _, v in items}) == 1:
        yield from _remember_by_copy(table, model, items)
        return
    # A multi-row VALUES binds three parameters a row: go 1,000 rows a statement, far below
    # PostgreSQL's 65,535-parameter ceiling however many texts one batch embedded.
    for start in range(0, len(items), REMEMBER_ROWS):
        values = [
            {"model": model, "content_hash": h, "embedding": list(v)}
            for h, v in items[start : start + REMEMBER_ROWS]
        ]
        yield Execute(pg.insert(table).values(values).on_conflict_do_nothing())


STAGE = sa.Table(
    "rag_pgstore_cache_stage",
    sa.MetaData(),
    sa.Column("content_hash", sa.Text),
    sa.Column("embedding", VECTOR()),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",  # gone with the transaction, rolled back or not
)


def _remember_by_copy(
    table: sa.Table, model: str, items: list[tuple[str, Sequence[float]]]
) -> Plan[None]:
    rows = binary_vectors([v for _, v in items])
    yield Execute(sa.schema.CreateTable(STAGE))
    yield Copy(
        sql.SQL("COPY {} (content_hash, embedding) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(STAGE.name)
        ),
        ("text", "bytea"),  # pgvector's own binary form, sent as it is
        lambda: ([h, row] for (h, _), row in zip(items, rows, strict=True)),
    )
    staged = sa.select(sa.literal(model, sa.Text), STAGE.c.content_hash, STAGE.c.embedding)
    yield Execute(
        pg.insert(table)
        .from_select(["model", "content_hash", "embedding"], staged.order_by(STAGE.c.content_hash))
        .on_conflict_do_nothing()
    )
