"""The collection table, its registry row, and the migrations that create and upgrade them.

Each collection is one table. A registry table (``rag_pgstore_collections``) in the same schema
records what each table was created with and which migration it has reached, so a later
version can upgrade an old table in place and a store opened with different settings fails
loudly instead of writing into the wrong shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, overload

import sqlalchemy as sa
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ColumnElement

from rag_pgstore.codec import Encoder, check_name, check_tenant, content_hash, jsonb
from rag_pgstore.errors import CollectionNameError, SchemaError, UnsupportedError
from rag_pgstore.types import Distance, KeywordSearch, choice

__all__ = [
    "COLUMNS",
    "COPY_TYPES",
    "ENCODERS",
    "MIGRATIONS",
    "READ_COLUMNS",
    "REGISTRY_NAME",
    "SCHEMA_VERSION",
    "WRITTEN_COLUMNS",
    "Collection",
    "ColumnSpec",
    "ann_index",
]

RESERVED_PREFIX = "rag_pgstore_"
REGISTRY_NAME = "rag_pgstore_collections"
MAX_DIM = 16_000  # pgvector's limit for vector and halfvec columns
HALFVEC_ABOVE = 2_000  # pgvector indexes vector up to 2,000 dims and halfvec up to 4,000
MAX_INDEXED_DIM = 4_000
# A heap row must fit one 8 kB page; keep the vector inline (PLAIN) when it leaves room for the
# other columns' TOAST pointers, because detoasting costs ~4x on exact scans.
PLAIN_STORAGE_MAX_BYTES = 7_000
MAX_PARTITIONS = 1_024
# The setting that carries a tenant view's tenant in each of its transactions: the tenant_id
# column's default and the row-security policy read it (see docs/tenancy.md).
TENANT_SETTING = "rag_pgstore.tenant"


@dataclass(frozen=True)
class Collection:
    """What a collection is: its name, place, vector shape, distance and text-search config."""

    name: str
    dim: int
    schema: str = "public"
    distance: Distance = Distance.COSINE
    text_config: str = "english"
    keyword: KeywordSearch | None = None  # None: what the table has (BM25 for a new one)
    # HASH partitions on chunk_id (tenant_id with tenancy), fixed at creation; None: one
    # table (or what it has).
    partitions: int | None = None
    # A tenant_id column in the primary key, fixed at creation; None: what the table has
    # (none for a new one).
    tenancy: bool | None = None
    # The tenant this view of a tenancy collection is scoped to (ChunkStore.for_tenant).
    tenant: str | None = None
    _metadata: sa.MetaData = field(init=False, compare=False, repr=False)
    # What a BM25 read learnt of pg_stats, kept until ANALYZE runs again (see ops/keyword.py);
    # one dict that the store's sync and async engines share.
    term_stats: dict[str, Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_name(self.name, "collection")
        if self.name.startswith(RESERVED_PREFIX):
            # The registry, the embedding cache, the staging table and whatever comes later.
            raise CollectionNameError(
                f"expected a collection name that does not start with {RESERVED_PREFIX!r} "
                f"(reserved for rag_pgstore's own tables), got {self.name!r}"
            )
        check_name(self.schema, "schema")
        check_name(self.text_config, "text_config")
        if (
            isinstance(self.dim, bool)
            or not isinstance(self.dim, int)
            or not 1 <= self.dim <= MAX_DIM
        ):
            raise UnsupportedError(f"expected 1 <= dim <= {MAX_DIM}, got dim={self.dim!r}")
        object.__setattr__(self, "distance", Distance.parse(self.distance))
        if self.partitions is not None and (
            isinstance(self.partitions, bool)
            or not isinstance(self.partitions, int)
            or not 2 <= self.partitions <= MAX_PARTITIONS
        ):
            raise UnsupportedError(
                f"expected partitions to be an int from 2 to {MAX_PARTITIONS} (or None: one "
                f"table), got {self.partitions!r}"
            )
        if self.keyword is not None:
            object.__setattr__(self, "keyword", choice(KeywordSearch, self.keyword, "keyword"))
        if self.tenancy is not None and not isinstance(self.tenancy, bool):
            raise UnsupportedError(
                f"expected tenancy to be True, False or None, got {self.tenancy!r}"
            )
        if self.tenant is not None:
            check_tenant(self.tenant)
            if self.tenancy is not True:
                raise UnsupportedError(
                    f"expected a collection with tenancy for tenant {self.tenant!r}, got "
                    f"collection {self.name!r} without; create it with tenancy=True, or see "
                    "enabling tenancy in docs/tenancy.md"
                )
        object.__setattr__(self, "_metadata", sa.MetaData())
        object.__setattr__(self, "term_stats", {})

    @property
    def vector_type(self) -> str:
        """``halfvec`` above 2,000 dims so the collection can still have an HNSW index."""
        return "halfvec" if self.dim > HALFVEC_ABOVE else "vector"

    @property
    def nonzero(self) -> bool:
        """Whether zero vectors are refused: under cosine they have no direction (NaN distance)."""
        return self.distance is Distance.COSINE

    @property
    def plain_storage(self) -> bool:
        element = 2 if self.vector_type == "halfvec" else 4
        return element * self.dim + 8 <= PLAIN_STORAGE_MAX_BYTES

    def scope(self) -> ColumnElement[bool] | None:
        """The predicate that keeps a statement to this view's tenant (``None``: no tenancy).

        Every statement that reads or deletes rows carries it. A tenancy collection without a
        tenant refuses: nothing falls back to every tenant's rows.
        """
        if not self.tenancy:
            return None
        if self.tenant is None:
            raise UnsupportedError(
                f"expected a tenant for the rows of collection {self.name!r}, which has "
                "tenancy; use store.for_tenant(tenant_id)"
            )
        return self.table.c.tenant_id == sa.literal(self.tenant, sa.Text)

    def for_tenant(self, tenant: str) -> Collection:
        """This collection scoped to ``tenant``, sharing its table objects and BM25 statistics.

        A view per request then builds no schema objects, and SQLAlchemy's compiled-statement
        cache, which is keyed by table objects, serves every tenant alike (measured: a view's
        first search cost 3 ms more than the next before this).
        """
        view = replace(self, tenant=tenant)
        for shared in ("_metadata", "term_stats", "table", "registry", "staging"):
            object.__setattr__(view, shared, getattr(self, shared))
        return view

    @overload
    def scoped(self, where: ColumnElement[bool]) -> ColumnElement[bool]: ...
    @overload
    def scoped(self, where: None) -> ColumnElement[bool] | None: ...
    @overload
    def scoped(self, where: ColumnElement[bool] | None) -> ColumnElement[bool] | None: ...

    def scoped(self, where: ColumnElement[bool] | None) -> ColumnElement[bool] | None:
        """``where`` and :meth:`scope` (either may be ``None``)."""
        own = self.scope()
        if own is None:
            return where
        return own if where is None else sa.and_(own, where)

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The primary key: a tenant's chunk ids are its own."""
        return ("tenant_id", "chunk_id") if self.tenancy else ("chunk_id",)

    @property
    def index_name(self) -> str:
        return f"{self.name}_embedding_ann"

    @cached_property
    def table(self) -> sa.Table:
        """The table as reads and writes name it, with every mode's keyword columns."""
        return self._build_table(self._metadata, keyword_columns=True)

    def bare_table(self) -> sa.Table:
        """The table as created, before :func:`keyword_add` adds the mode's columns."""
        return self._build_table(sa.MetaData(), keyword_columns=False)

    def _build_table(self, metadata: sa.MetaData, *, keyword_columns: bool) -> sa.Table:
        vector_type = HALFVEC(self.dim) if self.vector_type == "halfvec" else VECTOR(self.dim)
        keyword = (
            # What each mode adds (see keyword_add); reads name them here.
            (sa.Column("tsv", pg.TSVECTOR), sa.Column("dl", sa.Integer)) if keyword_columns else ()
        )
        tenant = (
            # Filled from the transaction's tenant setting: a write (COPY included) needs no
            # extra column, and one without a tenant fails on NOT NULL.
            (
                sa.Column(
                    "tenant_id",
                    sa.Text,
                    primary_key=True,
                    server_default=sa.func.current_setting(TENANT_SETTING, True),
                ),
            )
            if self.tenancy
            else ()
        )
        table = sa.Table(
            self.name,
            metadata,
            *tenant,
            sa.Column("chunk_id", sa.Text, primary_key=True),
            sa.Column("entity_id", sa.Text, nullable=False),
            sa.Column("chunk_index", sa.Integer, nullable=False, server_default="0"),
            sa.Column("total_chunks", sa.Integer, nullable=False, server_default="1"),
            sa.Column("content", sa.Text, nullable=False),
            sa.Column("metadata", pg.JSONB, nullable=False, server_default="{}"),
            sa.Column("embedding", vector_type, nullable=False),
            sa.Column("content_hash", sa.Text, nullable=False),
            # Data an adapter needs to rebuild its own objects (LlamaIndex node type and
            # relationships); kept apart from metadata so it never shows up as user metadata.
            sa.Column("adapter_data", pg.JSONB),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            ),
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            ),
            *keyword,
            schema=self.schema,
            # The primary key's first column (chunk_id, or tenant_id with tenancy): a
            # partitioned table's unique keys must hold the partition key, and upserts
            # conflict on the primary key.
            postgresql_partition_by=f"HASH ({self.key_columns[0]})" if self.partitions else None,
        )
        entity = (table.c.tenant_id,) if self.tenancy else ()
        sa.Index(f"{self.name}_entity_idx", *entity, table.c.entity_id, table.c.chunk_index)
        sa.Index(f"{self.name}_metadata_gin", table.c["metadata"], postgresql_using="gin")
        return table

    @property
    def tsv_index_name(self) -> str:
        """The GIN index of the keyword column ``tsv`` (absent when keyword search is off)."""
        return f"{self.name}_tsv_gin"

    @cached_property
    def registry(self) -> sa.Table:
        return registry_table(self.schema, self._metadata)

    @cached_property
    def staging(self) -> sa.Table:
        """The per-transaction table that rows replacing existing ones are copied into first."""
        source = self.table.c
        return sa.Table(
            "rag_pgstore_stage",
            sa.MetaData(),
            *(
                sa.Column(name, source[name].type, nullable=source[name].nullable)
                for name in WRITTEN_COLUMNS
            ),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DROP",
        )


@dataclass(frozen=True)
class ColumnSpec:
    """How one column of the collection table is written and read.

    ``copy_type`` and ``encode`` are set for the columns a write sends by binary COPY: the
    field's type on the wire (``jsonb`` and ``vector`` values are already encoded, so they
    travel as opaque ``bytea`` and the server reads them with the target column's receive
    function) and how the value comes from a chunk. ``read``: part of every ``StoredChunk``.
    """

    name: str
    copy_type: str | None = None
    encode: Encoder | None = None
    read: bool = True


# The columns writes and reads name, in the order COPY sends them and a StoredChunk reads them
# (the table's DDL above lists the same names; a test checks they agree).
COLUMNS = (
    ColumnSpec("chunk_id", "text", lambda chunk, chunk_id, vector: chunk_id),
    ColumnSpec(
        "entity_id",
        "text",
        lambda chunk, chunk_id, vector: chunk_id if chunk.entity_id is None else chunk.entity_id,
    ),
    ColumnSpec("chunk_index", "int4", lambda chunk, chunk_id, vector: chunk.chunk_index),
    ColumnSpec("total_chunks", "int4", lambda chunk, chunk_id, vector: chunk.total_chunks),
    ColumnSpec("content", "text", lambda chunk, chunk_id, vector: chunk.content),
    ColumnSpec(
        "metadata", "bytea", lambda chunk, chunk_id, vector: jsonb(chunk.metadata, chunk_id)
    ),
    ColumnSpec("embedding", "bytea", lambda chunk, chunk_id, vector: vector, read=False),
    ColumnSpec(
        "adapter_data",
        "bytea",
        lambda chunk, chunk_id, vector: (
            None if chunk.adapter_data is None else jsonb(chunk.adapter_data, chunk_id)
        ),
    ),
    ColumnSpec("content_hash", "text", lambda chunk, chunk_id, vector: content_hash(chunk.content)),
    ColumnSpec("created_at"),
    ColumnSpec("updated_at"),
)
WRITTEN = tuple(spec for spec in COLUMNS if spec.encode is not None)
WRITTEN_COLUMNS = tuple(spec.name for spec in WRITTEN)
COPY_TYPES = tuple(spec.copy_type or "" for spec in WRITTEN)
ENCODERS = tuple(spec.encode for spec in WRITTEN if spec.encode is not None)
READ_COLUMNS = tuple(spec.name for spec in COLUMNS if spec.read)


IMPORTS_NAME = "rag_pgstore_imports"


def imports_table(schema: str) -> sa.Table:
    """Where each import into a collection stands: the source's last key written, and rows."""
    return sa.Table(
        IMPORTS_NAME,
        sa.MetaData(),
        sa.Column("collection", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("last_key", sa.Text, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=schema,
    )


def registry_table(schema: str, metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        REGISTRY_NAME,
        metadata if metadata is not None else sa.MetaData(),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector_type", sa.Text, nullable=False),
        sa.Column("distance", sa.Text, nullable=False),
        sa.Column("text_config", sa.Text, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("ann_index", pg.JSONB),
        # NULL for collections made before keyword modes: they have ts_rank's generated tsv.
        sa.Column("keyword", sa.Text),
        # The model that wrote the collection's vectors ("local:all-MiniLM-L6-v2", "hash:256"),
        # recorded at its first ingest; NULL until then, or when only upsert() wrote vectors.
        sa.Column("embedder", sa.Text),
        # The number of HASH partitions, as text; NULL: one table.
        sa.Column("partitions", sa.Text),
        # "on": a tenant_id column in the primary key; NULL: none.
        sa.Column("tenancy", sa.Text),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "upgraded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=schema,
    )


def _v1_create_table(collection: Collection) -> list[Executable]:
    """Create the table, keep vectors inline, add the btree and GIN indexes and the columns of
    the collection's keyword search."""
    table = collection.bare_table()
    steps: list[Executable] = [sa.schema.CreateTable(table, if_not_exists=True)]
    steps.extend(partitions_of(collection))
    if collection.plain_storage:
        steps.append(
            ddl("ALTER TABLE %(fullname)s ALTER COLUMN embedding SET STORAGE PLAIN", table)
        )
    steps.extend(sa.schema.CreateIndex(index, if_not_exists=True) for index in table.indexes)
    steps.extend(keyword_add(collection, collection.keyword or KeywordSearch.BM25))
    return steps


def partition_names(collection: Collection) -> list[str]:
    return [f"{collection.name}_p{i}" for i in range(collection.partitions or 0)]


def partitions_of(collection: Collection) -> list[Executable]:
    """The HASH partitions of a partitioned collection, each a table of its own (with its own
    indexes, made by the parent's CREATE INDEX)."""
    preparer = pg.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    n = collection.partitions or 0
    return [
        ddl(
            f"CREATE TABLE IF NOT EXISTS %(schema)s.{preparer.quote(name)} PARTITION OF "
            f"%(fullname)s FOR VALUES WITH (MODULUS {n:d}, REMAINDER {i:d})",
            collection.bare_table(),
        )
        for i, name in enumerate(partition_names(collection))
    ]


def ddl(statement: str, table: sa.Table) -> Executable:
    """``statement`` with ``%(fullname)s`` / ``%(schema)s`` filled with the table's quoted
    names by SQLAlchemy. Only fixed text and names go in: never a value from a caller."""
    return sa.DDL(statement).against(table)  # type: ignore[no-untyped-call]


def sql_literal(value: str) -> str:
    """A SQL string literal for DDL that cannot take bind parameters, quoted by SQLAlchemy
    (``text_config`` is a checked identifier and a configuration the server has)."""
    compiled = sa.literal(value, sa.Text).compile(
        dialect=pg.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"literal_binds": True},
    )
    # DDL() formats with %, so a literal percent sign must be doubled.
    return str(compiled).replace("%", "%%")


def stored_keyword(value: str | None) -> KeywordSearch:
    """A registry row's keyword mode; collections made before modes existed are ts_rank."""
    if value is None:
        return KeywordSearch.TS_RANK
    try:
        return KeywordSearch(value)
    except ValueError:
        raise SchemaError(
            f"expected a keyword mode among off, ts_rank, bm25, got {value!r}: the collection "
            "was set up by a newer rag_pgstore; upgrade this one"
        ) from None


KEYWORD_FUNCTION = "rag_pgstore_keyword_row"
KEYWORD_TRIGGER = "rag_pgstore_keyword"
# ANALYZE then tracks the 3,000 most common lexemes (their IDF; rarer ones are counted at
# query time). It samples 300 x this many rows, held in memory with their embeddings, so a
# higher target costs every (auto)ANALYZE of the table a lot more memory.
TSV_STATISTICS = 300


def stored_partitions(row: Mapping[str, Any]) -> int | None:
    """The partition count a registry row records (``None``: one table)."""
    value = row.get("partitions")
    return int(value) if value else None


def stored_tenancy(row: Mapping[str, Any]) -> bool:
    """Whether a registry row records a tenancy collection."""
    return row.get("tenancy") == "on"


TENANT_POLICY = "rag_pgstore_tenant"


def tenancy_add(collection: Collection, tenant: str, primary_key: str) -> list[Executable]:
    """Give a table without tenancy its ``tenant_id``, every existing row in ``tenant``: the
    column (PostgreSQL stores a constant default without rewriting the table), then the
    primary key ``(tenant_id, chunk_id)`` in place of ``primary_key`` and the entity index
    with the tenant in front. ``collection`` is the table as it will be (tenancy on)."""
    table = collection.table
    preparer = pg.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    entity = next(i for i in table.indexes if i.name == f"{collection.name}_entity_idx")
    return [
        ddl(
            "ALTER TABLE %(fullname)s ADD COLUMN tenant_id text NOT NULL DEFAULT "
            f"{sql_literal(tenant)}",
            table,
        ),
        ddl(
            "ALTER TABLE %(fullname)s ALTER COLUMN tenant_id SET DEFAULT "
            f"current_setting({sql_literal(TENANT_SETTING)}, true)",
            table,
        ),
        ddl(
            f"ALTER TABLE %(fullname)s DROP CONSTRAINT {preparer.quote(primary_key)}, "
            "ADD PRIMARY KEY (tenant_id, chunk_id)",
            table,
        ),
        sa.schema.DropIndex(entity, if_exists=True),
        sa.schema.CreateIndex(entity),
    ]


def row_security(collection: Collection) -> list[Executable]:
    """Row-level security on ``tenant_id``: a role that is not the table's owner (nor a
    superuser, nor BYPASSRLS) sees and writes only the rows of the tenant its transaction
    set, even through raw SQL; no setting, no rows. Idempotent."""
    table = collection.table
    check = f"(tenant_id = current_setting({sql_literal(TENANT_SETTING)}, true))"
    return [
        ddl("ALTER TABLE %(fullname)s ENABLE ROW LEVEL SECURITY", table),
        ddl(f"DROP POLICY IF EXISTS {TENANT_POLICY} ON %(fullname)s", table),
        ddl(
            f"CREATE POLICY {TENANT_POLICY} ON %(fullname)s USING {check} WITH CHECK {check}",
            table,
        ),
    ]


def keyword_function(collection: Collection) -> Executable:
    """The trigger function BM25 collections share in a schema: one analysis of the content
    gives both the lexemes (``tsv``) and the document length in tokens (``dl``), which a
    generated column cannot (it may not read another generated column)."""
    return ddl(  # fixed text: no caller's value in it
        f"CREATE OR REPLACE FUNCTION %(schema)s.{KEYWORD_FUNCTION}() RETURNS trigger "  # noqa: S608
        "LANGUAGE plpgsql AS $$ BEGIN "
        "NEW.tsv := to_tsvector(TG_ARGV[0]::regconfig, NEW.content); "
        "NEW.dl := (SELECT coalesce(sum(cardinality(positions)), 0) FROM unnest(NEW.tsv)); "
        "RETURN NEW; END $$",
        collection.table,
    )


def keyword_add(collection: Collection, mode: KeywordSearch) -> list[Executable]:
    """Add what ``mode`` needs to a table that has no keyword columns, filled for every row."""
    if mode is KeywordSearch.OFF:
        return []
    table = collection.table
    config = sql_literal(collection.text_config)
    gin = ddl(
        f"CREATE INDEX IF NOT EXISTS {collection.tsv_index_name} ON %(fullname)s USING gin (tsv)",
        table,
    )
    if mode is KeywordSearch.TS_RANK:
        return [
            ddl(
                "ALTER TABLE %(fullname)s ADD COLUMN IF NOT EXISTS tsv tsvector "
                f"GENERATED ALWAYS AS (to_tsvector({config}::regconfig, content)) STORED",
                table,
            ),
            gin,
        ]
    return [
        ddl(
            "ALTER TABLE %(fullname)s ADD COLUMN IF NOT EXISTS tsv tsvector, "
            "ADD COLUMN IF NOT EXISTS dl integer",
            table,
        ),
        ddl(f"DROP TRIGGER IF EXISTS {KEYWORD_TRIGGER} ON %(fullname)s", table),
        ddl(
            f"CREATE TRIGGER {KEYWORD_TRIGGER} BEFORE INSERT OR UPDATE OF content ON "
            f"%(fullname)s FOR EACH ROW EXECUTE FUNCTION %(schema)s.{KEYWORD_FUNCTION}({config})",
            table,
        ),
        # Fill the rows written before, through the trigger (none in a new table).
        sa.update(table).where(table.c.dl.is_(None)).values(content=table.c.content),
        gin,
        ddl(f"ALTER TABLE %(fullname)s ALTER COLUMN tsv SET STATISTICS {TSV_STATISTICS}", table),
    ]


# Registry columns added after its first release, each nullable text: NULL reads as what
# collections made before it had (ts_rank; no recorded embedder).
ADDED_REGISTRY_COLUMNS = ("keyword", "embedder", "partitions", "tenancy")


def registry_column(collection: Collection, name: str) -> Executable:
    """Give a registry made before ``name`` existed that column (one of ADDED_REGISTRY_COLUMNS)."""
    if name not in ADDED_REGISTRY_COLUMNS:
        raise ValueError(f"expected one of {ADDED_REGISTRY_COLUMNS}, got {name!r}")
    return ddl(
        f"ALTER TABLE %(fullname)s ADD COLUMN IF NOT EXISTS {name} text", collection.registry
    )


def analyze_table(collection: Collection) -> Executable:
    return ddl("ANALYZE %(fullname)s", collection.table)


def keyword_drop(collection: Collection) -> list[Executable]:
    """Remove every mode's keyword columns, trigger and index (the index goes with ``tsv``)."""
    table = collection.table
    return [
        ddl(f"DROP TRIGGER IF EXISTS {KEYWORD_TRIGGER} ON %(fullname)s", table),
        ddl("ALTER TABLE %(fullname)s DROP COLUMN IF EXISTS dl, DROP COLUMN IF EXISTS tsv", table),
    ]


def tsv_index(collection: Collection) -> sa.Index:
    """The keyword column's GIN index, as :func:`keyword_add` creates it."""
    table = collection.table
    index = sa.Index(collection.tsv_index_name, table.c.tsv, postgresql_using="gin")
    table.indexes.discard(index)  # as in ann_index
    return index


def deferred_indexes(
    collection: Collection, present: set[str], ann: Mapping[str, Any] | None
) -> list[sa.Index]:
    """The secondary indexes of the collection that are in ``present`` (index names), as
    SQLAlchemy indexes a bulk load can drop and create again: the entity btree, the metadata
    GIN, the keyword GIN and the ANN index the registry records (``ann``). The primary key
    stays: every write checks ids against it. An index of another name is left alone."""
    found = [index for index in collection.table.indexes if index.name in present]
    if collection.tsv_index_name in present:
        found.append(tsv_index(collection))
    if ann is not None and collection.index_name in present:
        options = {key: int(value) for key, value in ann.items() if key != "using"}
        found.append(ann_index(collection, str(ann["using"]), options))
    return found


def tenant_index_name(collection: Collection, tenant: str) -> str:
    """The name of ``tenant``'s partial ANN index: a digest, since a tenant id is no name."""
    digest = hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{collection.name}_t{digest}"


def ann_index(
    collection: Collection, using: str, options: dict[str, int], *, tenant: str | None = None
) -> sa.Index:
    """The collection's ANN index, with the operator class of its distance; with ``tenant``,
    that tenant's partial index (``WHERE tenant_id = ...``, the value quoted by SQLAlchemy)."""
    table = collection.table
    partial: dict[str, Any] = (
        {} if tenant is None else {"postgresql_where": table.c.tenant_id == tenant}
    )
    index = sa.Index(
        collection.index_name if tenant is None else tenant_index_name(collection, tenant),
        table.c.embedding,
        postgresql_using=using,
        postgresql_with=options,
        postgresql_ops={"embedding": collection.distance.opclass(collection.vector_type)},
        **partial,
    )
    # Index() registers itself on the table; keep table.indexes to the ones migrations create.
    table.indexes.discard(index)
    return index


def _v2_adapter_data(collection: Collection) -> list[Executable]:
    """Add ``adapter_data`` to tables created by version 1 (new tables already have it)."""
    return [
        ddl(
            "ALTER TABLE %(fullname)s ADD COLUMN IF NOT EXISTS adapter_data jsonb", collection.table
        )
    ]


# Migration N (1-based) brings a collection from version N-1 to N. Append, never edit. The
# first creates the table in its latest shape; later ones bring older tables up to it.
MIGRATIONS: tuple[Callable[[Collection], list[Executable]], ...] = (
    _v1_create_table,
    _v2_adapter_data,
)
SCHEMA_VERSION = len(MIGRATIONS)
