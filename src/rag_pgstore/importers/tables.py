"""Sources that are tables: langchain-postgres's ``PGVector`` and ``PGVectorStore`` layouts,
and llama-index-vector-stores-postgres's ``data_*`` tables (plain and hybrid).

Each reads its rows with SQLAlchemy Core in pages ordered by the table's key (a keyset, so a
page costs the same at the end of a table as at its start), checks the layout first (a
missing column is an error naming it, not a failed query), and maps a row to a chunk the way
our adapter for that framework maps its documents or nodes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import URL, Engine

from rag_pgstore import driver
from rag_pgstore.connect import make_engine
from rag_pgstore.driver.policy import database
from rag_pgstore.driver.steps import Fetch, Plan
from rag_pgstore.errors import (
    CollectionNotFoundError,
    InvalidInputError,
    MissingDependencyError,
    SchemaError,
    show,
)
from rag_pgstore.types import Chunk

__all__ = [
    "check_layout",
    "langchain_pgvector",
    "langchain_pgvectorstore",
    "llamaindex_pgvector",
    "typed_key",
    "unique_key",
]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class TablePage:
    chunks: list[Chunk]
    last: str


@dataclass(frozen=True)
class _TableSource:
    """A table (or a join) read in pages: ``select`` is every row in key order, ``key`` the
    column the pages continue after, ``to_chunk`` one row's chunk."""

    name: str
    engine: Engine
    select: sa.Select[Any]
    key: sa.ColumnElement[Any]
    to_chunk: Callable[[Row], Chunk] = field(repr=False)
    key_value: Callable[[str], Any] = str  # a recorded key as the key column compares it

    def pages(self, after: str | None, size: int) -> Iterator[TablePage]:
        try:
            yield from self._pages(after, size)
        except CollectionNotFoundError as exc:  # 42P01: the source table went away
            raise SchemaError(f"the source of {self.name} is gone: {exc}") from exc

    def _pages(self, after: str | None, size: int) -> Iterator[TablePage]:
        while True:
            statement = (
                self.select
                if after is None
                else self.select.where(self.key > self.key_value(after))
            )
            page = statement.limit(size)
            rows = driver.run(self.engine, functools.partial(_rows, page))
            if not rows:
                return
            after = str(rows[-1]["key"])
            yield TablePage([self.to_chunk(row) for row in rows], after)
            if len(rows) < size:
                return


def _rows(statement: sa.Select[Any]) -> Plan[list[Row]]:
    rows = yield Fetch(statement)
    return [row._mapping for row in rows]


def _columns(schema: str, table: str) -> Plan[dict[str, str]]:
    columns = sa.table(
        "columns",
        sa.column("table_schema"),
        sa.column("table_name"),
        sa.column("column_name"),
        sa.column("udt_name"),
        schema="information_schema",
    )
    rows = yield Fetch(
        sa.select(columns.c.column_name, columns.c.udt_name).where(
            columns.c.table_schema == schema, columns.c.table_name == table
        )
    )
    return {name: udt for name, udt in rows}


def check_layout(
    engine: Engine, schema: str, table: str, wanted: Sequence[str], what: str
) -> dict[str, str]:
    """The table's columns (name -> type), after checking ``wanted`` are among them."""
    found = driver.run(engine, lambda: _columns(schema, table))
    if not found:
        raise SchemaError(
            f"expected a table {schema}.{table} ({what}), found none (or this role cannot read it)"
        )
    missing = [c for c in wanted if c not in found]
    if missing:
        raise SchemaError(
            f"expected columns {missing} in {schema}.{table} ({what}), found {sorted(found)}; "
            "pass the column names the table uses"
        )
    return found


_INTEGERS = {"int2": sa.SmallInteger(), "int4": sa.Integer(), "int8": sa.BigInteger()}
_STRINGS = {
    "text": sa.Text(),
    "varchar": sa.String(),
    "bpchar": sa.String(),
    "uuid": pg.UUID(as_uuid=False),
}


def typed_key(
    table: sa.TableClause, name: str, udt: str
) -> tuple[sa.ColumnElement[Any], Callable[[str], Any]]:
    """The key column as it orders and compares, and a recorded key as it compares.

    Integers, strings and UUIDs compare natively (an index on the key serves each page);
    a key of another type is ordered by its text form, which is stable too.
    """
    column = table.c[name]
    if udt in _INTEGERS:
        return sa.type_coerce(column, _INTEGERS[udt]), int
    if udt in _STRINGS:
        return sa.type_coerce(column, _STRINGS[udt]), str
    return sa.cast(column, sa.Text), str


def unique_key(engine: Engine, schema: str, table: str, column: str) -> None:
    """Refuse a key that could repeat or be NULL: pages continue after the last key, so two
    rows of one key across a page boundary, or a NULL, would be skipped without a sign."""
    attribute = sa.table(
        "pg_attribute",
        sa.column("attrelid"),
        sa.column("attname"),
        sa.column("attnum"),
        sa.column("attnotnull"),
        schema="pg_catalog",
    )
    index = sa.table(
        "pg_index",
        sa.column("indrelid"),
        sa.column("indisunique"),
        sa.column("indnkeyatts"),
        sa.column("indkey", pg.ARRAY(sa.SmallInteger)),
        sa.column("indpred"),
        schema="pg_catalog",
    )
    preparer = pg.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    # Quoted as the catalog needs it: a mixed-case name would otherwise be folded.
    relation = sa.func.to_regclass(f"{preparer.quote_schema(schema)}.{preparer.quote(table)}")
    unique = sa.exists().where(
        index.c.indrelid == relation,
        index.c.indisunique,
        index.c.indnkeyatts == 1,
        index.c.indkey[0] == attribute.c.attnum,
        index.c.indpred.is_(None),
    )
    statement = sa.select(attribute.c.attnotnull, unique.label("unique")).where(
        attribute.c.attrelid == relation, attribute.c.attname == column
    )
    rows = driver.run(engine, functools.partial(_rows, statement))
    if not rows or not (rows[0]["attnotnull"] and rows[0]["unique"]):
        raise SchemaError(
            f"expected {column!r} of {schema}.{table} to be a unique, non-null key (a primary "
            "key or a unique index of its own): rows are read in its order, so a repeated or "
            "missing key would be skipped"
        )


def _engine(source: Engine | str | URL) -> Engine:
    return source if isinstance(source, Engine) else make_engine(source)


def _vector(row: Row, name: str) -> list[float]:
    value = row["embedding"]
    if value is None:
        raise InvalidInputError(
            f"expected every row to have an embedding, got none for {show(name)}: embed it "
            "first, or delete the row, and import again"
        )
    return [float(x) for x in value]


def _entity(metadata: Mapping[str, Any], key: str | None) -> str | None:
    # As LangChainVectorStore(entity_key=...) does: the document is metadata[key] if a string.
    value = metadata.get(key) if key else None
    return value if isinstance(value, str) else None


def langchain_pgvector(
    engine: Engine | str | URL,
    collection_name: str,
    *,
    schema: str = "public",
    entity_key: str | None = "source",
) -> _TableSource:
    """langchain-postgres ``PGVector``: the ``langchain_pg_collection`` and
    ``langchain_pg_embedding`` tables; one collection, by name.

    ``id`` becomes the chunk id, ``document`` its text, ``cmetadata`` its metadata, and
    ``metadata[entity_key]`` (when a string) its document, as ``LangChainVectorStore`` does.
    """
    bound = _engine(engine)
    check_layout(bound, schema, "langchain_pg_collection", ("uuid", "name"), "PGVector")
    check_layout(
        bound,
        schema,
        "langchain_pg_embedding",
        ("id", "collection_id", "embedding", "document", "cmetadata"),
        "PGVector",
    )
    collections = sa.table(
        "langchain_pg_collection", sa.column("uuid"), sa.column("name"), schema=schema
    )
    rows = sa.table(
        "langchain_pg_embedding",
        sa.column("id", sa.String),
        sa.column("collection_id"),
        sa.column("embedding", VECTOR()),
        sa.column("document", sa.String),
        sa.column("cmetadata", pg.JSONB),
        schema=schema,
    )
    found = driver.run(
        bound,
        lambda: _rows(sa.select(collections.c.uuid).where(collections.c.name == collection_name)),
    )
    if not found:
        raise SchemaError(
            f"expected a PGVector collection named {collection_name!r} in {schema}, found none"
        )
    select = (
        sa.select(
            rows.c.id.label("key"),
            rows.c.document,
            rows.c.cmetadata,
            sa.cast(rows.c.embedding, VECTOR()).label("embedding"),
        )
        .where(rows.c.collection_id == found[0]["uuid"])
        .order_by(rows.c.id)
    )

    def to_chunk(row: Row) -> Chunk:
        metadata = dict(row["cmetadata"] or {})
        return Chunk(
            chunk_id=str(row["key"]),
            entity_id=_entity(metadata, entity_key),
            content=row["document"] or "",
            embedding=_vector(row, str(row["key"])),
            metadata=metadata,
        )

    unique_key(bound, schema, "langchain_pg_embedding", "id")
    name = f"langchain-postgres:{database(bound)}/{schema}.{collection_name}"
    return _TableSource(name, bound, select, rows.c.id, to_chunk)


def langchain_pgvectorstore(
    engine: Engine | str | URL,
    table: str,
    *,
    schema: str = "public",
    id_column: str = "langchain_id",
    content_column: str = "content",
    embedding_column: str = "embedding",
    metadata_json_column: str | None = "langchain_metadata",
    metadata_columns: Sequence[str] = (),
    entity_key: str | None = "source",
) -> _TableSource:
    """langchain-postgres ``PGVectorStore``: one table of its layout (the defaults are its
    column names). Metadata is the JSON column with each of ``metadata_columns`` laid over
    it, as ``PGVectorStore`` builds a document's metadata."""
    bound = _engine(engine)
    extra = [metadata_json_column] if metadata_json_column else []
    wanted = [id_column, content_column, embedding_column, *extra, *metadata_columns]
    found = check_layout(bound, schema, table, wanted, "PGVectorStore")
    t = sa.table(table, *(sa.column(c) for c in dict.fromkeys(wanted)), schema=schema)
    key, key_value = typed_key(t, id_column, found[id_column])
    select = sa.select(
        key.label("key"),
        t.c[content_column].label("content"),
        sa.cast(t.c[embedding_column], VECTOR()).label("embedding"),
        *(t.c[c].label(f"m{i}") for i, c in enumerate(metadata_columns)),
        *([t.c[metadata_json_column].label("json")] if metadata_json_column else []),
    ).order_by(key)

    def to_chunk(row: Row) -> Chunk:
        metadata = dict(row["json"] or {}) if metadata_json_column else {}
        for i, column in enumerate(metadata_columns):
            metadata[column] = row[f"m{i}"]
        return Chunk(
            chunk_id=str(row["key"]),
            entity_id=_entity(metadata, entity_key),
            content=row["content"] or "",
            embedding=_vector(row, str(row["key"])),
            metadata=metadata,
        )

    unique_key(bound, schema, table, id_column)
    name = f"langchain-pgvectorstore:{database(bound)}/{schema}.{table}"
    return _TableSource(name, bound, select, key, to_chunk, key_value)


def llamaindex_pgvector(
    engine: Engine | str | URL, table: str, *, schema: str = "public"
) -> _TableSource:
    """llama-index-vector-stores-postgres ``PGVectorStore``: a ``data_<index>`` table (with
    or without its hybrid ``text_search_tsv`` column, in JSON or JSONB).

    Each row becomes the node LlamaIndex would read back (``metadata_dict_to_node`` on
    ``metadata_``, its text set from ``text``), then the chunk ``LlamaIndexVectorStore``
    makes of that node: ``node_id`` the chunk id, ``ref_doc_id`` the document. Needs
    ``pip install 'rag-pgstore[llamaindex]'``.
    """
    try:
        from llama_index.core.schema import TextNode
        from llama_index.core.vector_stores.utils import metadata_dict_to_node

        from rag_pgstore.adapters.llamaindex.vectorstore import to_chunk as node_chunk
    except ImportError as exc:
        raise MissingDependencyError(
            "importing LlamaIndex rows needs its node model: pip install 'rag-pgstore[llamaindex]'"
        ) from exc
    bound = _engine(engine)
    wanted = ("id", "text", "metadata_", "node_id", "embedding")
    check_layout(bound, schema, table, wanted, "LlamaIndex PGVectorStore")
    t = sa.table(
        table,
        sa.column("id", sa.BigInteger),
        sa.column("text"),
        sa.column("metadata_", pg.JSONB),
        sa.column("node_id"),
        sa.column("embedding"),
        schema=schema,
    )
    twice = driver.run(
        bound,
        lambda: _rows(
            sa.select(t.c.node_id.label("node_id"))
            .group_by(t.c.node_id)
            .having(sa.func.count() > 1)
            .limit(5)
        ),
    )
    if twice:
        raise InvalidInputError(
            f"expected each node_id once in {schema}.{table}, got "
            f"{[r['node_id'] for r in twice]} more than once: LlamaIndex would read back "
            "whichever came first; delete the duplicates, then import"
        )
    select = sa.select(
        t.c.id.label("key"),
        t.c.text,
        sa.cast(t.c.metadata_, pg.JSONB).label("metadata"),
        t.c.node_id,
        sa.cast(t.c.embedding, VECTOR()).label("embedding"),
    ).order_by(t.c.id)

    def to_chunk(row: Row) -> Chunk:
        stored = dict(row["metadata"] or {})
        try:
            node = metadata_dict_to_node(stored)
            node.set_content(str(row["text"]))
        except Exception:  # rows written before LlamaIndex kept _node_content: as it reads them
            node = TextNode(id_=row["node_id"], text=row["text"], metadata=stored)
        node.embedding = _vector(row, str(row["node_id"]))
        return node_chunk(node)

    unique_key(bound, schema, table, "id")
    name = f"llama-index:{database(bound)}/{schema}.{table}"
    return _TableSource(name, bound, select, t.c.id, to_chunk, int)
