"""Create, upgrade, drop, index and describe a collection, as plans (see ``driver/steps.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from rag_pgstore.codec import check_tenant
from rag_pgstore.driver.steps import Execute, Fetch, Forget, Plan, PlanSource
from rag_pgstore.errors import InvalidInputError, SchemaError, UnsupportedError
from rag_pgstore.ops.registry import missing, registered
from rag_pgstore.schema import (
    ADDED_REGISTRY_COLUMNS,
    KEYWORD_FUNCTION,
    MAX_INDEXED_DIM,
    MIGRATIONS,
    SCHEMA_VERSION,
    Collection,
    analyze_table,
    ann_index,
    imports_table,
    keyword_add,
    keyword_drop,
    keyword_function,
    registry_column,
    row_security,
    stored_keyword,
    stored_partitions,
    stored_tenancy,
    tenancy_add,
)
from rag_pgstore.sql.catalog import (
    PG_ATTRIBUTE,
    PG_CONSTRAINT,
    PG_EXTENSION,
    PG_TS_CONFIG,
    extension_version,
    index_leaves,
    index_names,
    server_version,
)
from rag_pgstore.sql.search import Explain, query_param, vector_search
from rag_pgstore.sql.writes import lock_key, lock_table, write_lock
from rag_pgstore.types import (
    CollectionInfo,
    Distance,
    HnswIndex,
    IvfflatIndex,
    KeywordSearch,
    choice,
)

MIN_PGVECTOR = (0, 7, 0)  # halfvec, L1 distance and binary COPY of both


def _lock(collection: Collection) -> Execute:
    """Serialise setup and index changes of one collection across processes."""
    key = lock_key(f"{collection.schema}.{collection.name}")
    return Execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def setup_lock() -> Execute:
    """Serialise every setup in the database.

    Objects that collections share (the extension, the schema, the registry and cache tables)
    are created with ``IF NOT EXISTS``, which is not safe against a concurrent creator: two
    transactions both find the object missing and the second fails on a catalog unique index.
    Only those short transactions take it (never one that waits for a collection's lock), so
    they simply take turns.
    """
    return Execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key("setup"))))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def prepare(collection: Collection, *, create_extension: bool = True) -> PlanSource[None]:
    """Make the database ready for the collection: pgvector, its schema, the registry table.

    What collections share, created under the database-wide setup lock in a short transaction
    of its own, so that no setup ever waits for another collection's index build. Run before
    :func:`setup` (``ChunkStore.setup`` runs both).
    """
    return lambda: _prepare(collection, create_extension)


def _prepare(c: Collection, create_extension: bool) -> Plan[None]:
    yield setup_lock()
    if create_extension:
        yield Execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    found = yield Fetch(
        sa.select(PG_EXTENSION.c.extversion).where(PG_EXTENSION.c.extname == "vector")
    )
    if not found:
        raise SchemaError(
            "expected the pgvector extension in this database, found none; run CREATE EXTENSION "
            "vector as a user allowed to, or pass create_extension=True"
        )
    if _version(found[0][0]) < MIN_PGVECTOR:
        raise UnsupportedError(
            f"expected pgvector >= 0.7.0, got {found[0][0]}; upgrade the extension"
        )
    configs = yield Fetch(sa.select(PG_TS_CONFIG.c.cfgname).order_by(PG_TS_CONFIG.c.cfgname))
    names = [row[0] for row in configs]
    if c.text_config not in names:
        raise UnsupportedError(
            f"expected text_config to be one of {', '.join(names)}, got {c.text_config!r}"
        )
    if c.schema != "public":
        yield Execute(sa.schema.CreateSchema(c.schema, if_not_exists=True))
    yield Execute(sa.schema.CreateTable(c.registry, if_not_exists=True))
    # Registries made by older versions lack the newer columns. Checked first: the ALTER would
    # lock the registry, which every search reads, even when there is nothing to add.
    present = yield Fetch(
        sa.select(PG_ATTRIBUTE.c.attname).where(
            PG_ATTRIBUTE.c.attrelid == sa.func.to_regclass(f"{c.schema}.{c.registry.name}"),
            PG_ATTRIBUTE.c.attname.in_(ADDED_REGISTRY_COLUMNS),
            sa.not_(PG_ATTRIBUTE.c.attisdropped),
        )
    )
    have = {row[0] for row in present}
    for name in ADDED_REGISTRY_COLUMNS:
        if name not in have:
            yield Execute(registry_column(c, name))
    function = yield Fetch(sa.select(sa.func.to_regprocedure(f"{c.schema}.{KEYWORD_FUNCTION}()")))
    if function[0][0] is None:
        yield Execute(keyword_function(c))


def setup(collection: Collection, *, rls: bool = False) -> PlanSource[bool]:
    """Create the collection's table and indexes, or upgrade them; idempotent. Return whether
    the collection has tenancy.

    Under the collection's own lock, so setups of other collections run alongside. Needs
    :func:`prepare` first. A table dropped behind the store's back is built again, with the
    settings it is opened with now. ``rls``: turn on row-level security by tenant (a tenancy
    collection only; see ``schema.row_security``).
    """
    return lambda: _setup(collection, rls)


def _setup(collection: Collection, rls: bool) -> Plan[bool]:
    c = collection
    yield _lock(c)
    registry = c.registry
    found = yield Fetch(sa.select(registry).where(registry.c.name == c.name))
    table_exists = yield Fetch(sa.select(sa.func.to_regclass(f"{c.schema}.{c.name}")))
    if found and table_exists[0][0] is None:
        # The table was dropped behind our back (by hand, a restore, another tool): the
        # registry row is stale. Forget it and build the table afresh, as opened now.
        yield Execute(sa.delete(registry).where(registry.c.name == c.name))
        version = 0
    elif found:
        row = found[0]._mapping
        _check_matches(c, row)
        version = row["schema_version"]
        c = dataclasses.replace(
            c,
            keyword=stored_keyword(row["keyword"]),
            partitions=stored_partitions(row),
            tenancy=stored_tenancy(row),
            tenant=None,
        )
    else:
        if table_exists[0][0] is not None:
            raise SchemaError(
                f"expected no table named {c.schema}.{c.name} outside rag_pgstore, found one; "
                "choose another collection name"
            )
        version = 0
    if version == 0:
        c = dataclasses.replace(
            c, keyword=c.keyword or KeywordSearch.BM25, tenancy=bool(c.tenancy), tenant=None
        )
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"expected schema version <= {SCHEMA_VERSION}, got {version}: the collection was "
            "written by a newer rag_pgstore; upgrade this one"
        )
    for migration in MIGRATIONS[version:]:
        for statement in migration(c):
            yield Execute(statement)
    values = {
        "name": c.name,
        "dim": c.dim,
        "vector_type": c.vector_type,
        "distance": c.distance.value,
        "text_config": c.text_config,
        "schema_version": SCHEMA_VERSION,
        "keyword": c.keyword.value if c.keyword else None,
        "partitions": str(c.partitions) if c.partitions else None,
        "tenancy": "on" if c.tenancy else None,
    }
    upsert = pg.insert(registry).values(values)
    yield Execute(
        upsert.on_conflict_do_update(
            index_elements=[registry.c.name],
            set_={"schema_version": SCHEMA_VERSION, "upgraded_at": sa.func.now()},
        )
    )
    if rls:
        if not c.tenancy:
            raise UnsupportedError(
                f"expected a collection with tenancy for row_security=True, got {c.name!r} "
                "without; create it with tenancy=True"
            )
        for statement in row_security(c):
            yield Execute(statement)
    return bool(c.tenancy)


def drop(c: Collection) -> PlanSource[None]:
    """Drop the collection: its table, indexes and registry entry. There is no undo."""
    return lambda: _drop(c)


def _drop(c: Collection) -> Plan[None]:
    yield _lock(c)
    yield Execute(sa.schema.DropTable(c.table, if_exists=True))
    registry = c.registry
    exists = yield Fetch(sa.select(sa.func.to_regclass(f"{c.schema}.{registry.name}")))
    if exists[0][0] is not None:
        yield Execute(sa.delete(registry).where(registry.c.name == c.name))
    imports = imports_table(c.schema)  # a collection made again later imports from the start
    exists = yield Fetch(sa.select(sa.func.to_regclass(f"{c.schema}.{imports.name}")))
    if exists[0][0] is not None:
        yield Execute(sa.delete(imports).where(imports.c.collection == c.name))
    yield Forget(c.schema, c.name)


def set_keyword_search(c: Collection, mode: KeywordSearch | str) -> PlanSource[bool]:
    """Switch an existing collection's keyword search to ``mode``; ``False`` if it has it.

    Rebuilds the keyword columns and their index for every row in one transaction under the
    table's exclusive lock: reads and writes of the collection wait until it commits. Turning
    it ``off`` drops them.
    """
    wanted = choice(KeywordSearch, mode, "keyword")
    return lambda: _set_keyword_search(c, wanted)


def _set_keyword_search(c: Collection, mode: KeywordSearch) -> Plan[bool]:
    yield _lock(c)
    yield Execute(write_lock(c, exclusive=True))
    registry = c.registry
    found = yield Fetch(sa.select(registry.c.keyword).where(registry.c.name == c.name))
    if not found:
        raise missing(c)
    if stored_keyword(found[0][0]) is mode:
        return False
    for statement in [*keyword_drop(c), *keyword_add(c, mode)]:
        yield Execute(statement)
    if mode is not KeywordSearch.OFF:
        yield Execute(analyze_table(c))  # BM25's statistics of the new columns
    yield Execute(
        sa.update(registry)
        .where(registry.c.name == c.name)
        .values(keyword=mode.value, upgraded_at=sa.func.now())
    )
    return True


def enable_tenancy(c: Collection, tenant: str) -> PlanSource[bool]:
    """Give an existing collection tenancy, in place; every chunk it holds becomes
    ``tenant``'s. ``False`` if it has tenancy already.

    One transaction under the table's exclusive lock: reads and writes wait for it. Adding
    the column is instant; the new primary key and entity index are built over every row,
    which takes about as long as building those indexes did at load. A partitioned
    collection cannot change its partition key and is refused.
    """
    check_tenant(tenant)
    return lambda: _enable_tenancy(c, tenant)


def _enable_tenancy(c: Collection, tenant: str) -> Plan[bool]:
    yield _lock(c)
    yield Execute(write_lock(dataclasses.replace(c, tenant=None), exclusive=True))
    registry = c.registry
    found = yield Fetch(sa.select(registry).where(registry.c.name == c.name).with_for_update())
    if not found:
        raise missing(c)
    row = found[0]._mapping
    if stored_tenancy(row):
        return False
    if stored_partitions(row):
        raise UnsupportedError(
            f"expected a collection without partitions to add tenancy in place, got "
            f"{c.name!r} with {stored_partitions(row)}: its partition key cannot change; "
            "create a collection with tenancy=True and copy the chunks (docs/tenancy.md)"
        )
    yield Execute(lock_table(c))
    key = yield Fetch(
        sa.select(PG_CONSTRAINT.c.conname).where(
            PG_CONSTRAINT.c.conrelid == sa.func.to_regclass(f"{c.schema}.{c.name}"),
            PG_CONSTRAINT.c.contype == "p",
        )
    )
    after = dataclasses.replace(c, tenancy=True, tenant=None)
    for statement in tenancy_add(after, tenant, key[0][0]):
        yield Execute(statement)
    yield Execute(
        sa.update(registry)
        .where(registry.c.name == c.name)
        .values(tenancy="on", upgraded_at=sa.func.now())
    )
    yield Forget(c.schema, c.name)
    return True


def analyze(c: Collection) -> PlanSource[None]:
    """Refresh PostgreSQL's statistics of the collection (BM25 reads its term frequencies
    from them) and merge the text index's pending entries; run it after a bulk load.

    Autovacuum does both on its own schedule. Until then every keyword query also scans the
    GIN index's pending list, which a bulk load fills (up to ``gin_pending_list_limit``).
    """
    return lambda: _analyze(c)


def _analyze(c: Collection) -> Plan[None]:
    yield Execute(analyze_table(c))
    leaves = index_leaves(c.schema, c.tsv_index_name).subquery()
    yield Fetch(sa.select(sa.func.gin_clean_pending_list(sa.cast(leaves.c.oid, pg.REGCLASS))))


def _check_matches(c: Collection, row: Mapping[str, Any]) -> None:
    if c.keyword is not None and c.keyword is not stored_keyword(row["keyword"]):
        have = stored_keyword(row["keyword"]).value
        raise SchemaError(
            f"collection {c.name!r} has keyword={have!r}, got keyword={c.keyword.value!r}; open "
            f"it with keyword={have!r} (or none), or switch it with "
            f"set_keyword_search({c.keyword.value!r})"
        )
    if c.tenancy is not None and c.tenancy != stored_tenancy(row):
        has = stored_tenancy(row)
        raise SchemaError(
            f"collection {c.name!r} was created with tenancy={has!r}, got "
            f"tenancy={c.tenancy!r}; open it with tenancy={has!r} (or none), or see "
            "docs/tenancy.md to add tenancy to an existing collection"
        )
    if c.partitions is not None and c.partitions != stored_partitions(row):
        stored = stored_partitions(row)
        raise SchemaError(
            f"collection {c.name!r} was created with partitions={stored!r}, got "
            f"partitions={c.partitions!r}; open it with partitions={stored!r} (or none), or "
            "create another collection and import into it (a table is not repartitioned "
            "in place)"
        )
    for field, want in (
        ("dim", c.dim),
        ("distance", c.distance.value),
        ("text_config", c.text_config),
    ):
        if row[field] != want:
            raise SchemaError(
                f"collection {c.name!r} was created with {field}={row[field]!r}, "
                f"got {field}={want!r}; open it with {field}={row[field]!r} "
                "or use another collection"
            )


def create_index(
    c: Collection, spec: HnswIndex | IvfflatIndex | None = None, *, tenant: str | None = None
) -> Plan[bool]:
    """Build the ANN index for the collection's distance; ``False`` if it already exists.

    ``spec`` defaults to ``HnswIndex()``. A different index (other kind or parameters) is
    replaced. Building HNSW over many rows takes a while: build it after bulk loading when you
    can. ``tenant`` (a collection with tenancy): an index of that tenant's rows alone, which
    its searches use in place of the shared one (for a tenant much larger than the others;
    see docs/tenancy.md); built again each time it is asked for.
    """
    if tenant is not None:
        check_tenant(tenant)
        if not c.tenancy:
            raise UnsupportedError(
                f"expected a collection with tenancy for an index of tenant {tenant!r}, got "
                f"{c.name!r} without"
            )
    spec = HnswIndex() if spec is None else spec
    if c.dim > MAX_INDEXED_DIM:
        raise UnsupportedError(
            f"expected at most {MAX_INDEXED_DIM} dimensions for an ANN index, got {c.dim}; "
            "search this collection exactly or reduce the embedding size"
        )
    if isinstance(spec, HnswIndex):
        using, options = "hnsw", {"m": spec.m, "ef_construction": spec.ef_construction}
    elif isinstance(spec, IvfflatIndex):
        if c.distance is Distance.L1:
            raise UnsupportedError(
                "expected an HnswIndex for L1 distance: IVFFlat does not support it"
            )
        using, options = "ivfflat", {"lists": spec.lists}
    else:
        raise InvalidInputError(f"expected HnswIndex or IvfflatIndex, got {type(spec).__name__}")
    if tenant is not None:
        return _tenant_index(c, ann_index(c, using, options, tenant=tenant))
    return _create_index(c, using, options)


def _tenant_index(c: Collection, index: sa.Index) -> Plan[bool]:
    yield _lock(c)
    yield Execute(sa.schema.DropIndex(index, if_exists=True))
    yield Execute(sa.schema.CreateIndex(index))
    yield Forget(c.schema, c.name)
    return True


def _create_index(c: Collection, using: str, options: dict[str, int]) -> Plan[bool]:
    wanted = {"using": using, **options}
    registry = c.registry
    yield _lock(c)
    found = yield Fetch(sa.select(registry.c.ann_index).where(registry.c.name == c.name))
    if not found:
        raise missing(c)
    index = ann_index(c, using, options)
    present = yield Fetch(sa.select(sa.func.to_regclass(f"{c.schema}.{c.index_name}")))
    if found[0][0] == wanted and present[0][0] is not None:
        yield Forget(c.schema, c.name)  # it may have been built by hand since we last looked
        return False
    yield Execute(sa.schema.DropIndex(index, if_exists=True))
    yield Execute(sa.schema.CreateIndex(index))
    yield Execute(sa.update(registry).where(registry.c.name == c.name).values(ann_index=wanted))
    yield Forget(c.schema, c.name)  # searches pick their form again
    return True


def drop_index(c: Collection, *, tenant: str | None = None) -> Plan[None]:
    """Drop the ANN index, if any; searches become exact scans. ``tenant``: drop that
    tenant's own index instead (its searches go back to the shared one)."""
    if tenant is not None:
        check_tenant(tenant)
        yield _lock(c)
        yield Execute(sa.schema.DropIndex(ann_index(c, "hnsw", {}, tenant=tenant), if_exists=True))
        yield Forget(c.schema, c.name)
        return
    yield _lock(c)
    yield Execute(sa.schema.DropIndex(ann_index(c, "hnsw", {}), if_exists=True))
    registry = c.registry
    yield Execute(sa.update(registry).where(registry.c.name == c.name).values(ann_index=None))
    yield Forget(c.schema, c.name)


def describe(c: Collection) -> Plan[CollectionInfo]:
    """What the collection holds and how it is served: counts, settings, indexes, versions,
    and whether a vector search would use the ANN index (from ``EXPLAIN``)."""
    # Read with to_jsonb: a registry an older version made (without the newer columns) is
    # described too, without the ALTER that only setup() may run.
    row = yield from registered(c.schema, c.name)
    if row is None:
        raise missing(c)
    table = c.table
    # A tenant view counts its own rows; the collection's owner (no tenant) counts them all.
    own = () if c.tenant is None else (c.scoped(sa.true()),)
    [(chunks, entities)] = yield Fetch(
        sa.select(sa.func.count(), sa.func.count(sa.distinct(table.c.entity_id))).where(*own)
    )
    [(server,)] = yield Fetch(server_version())
    pgvector = yield Fetch(extension_version("vector"))
    indexes = yield Fetch(index_names(c))
    query = query_param(c, [1.0] * c.dim)  # only planned, never run
    [(plan,)] = yield Fetch(Explain(vector_search(c, query, k=5)))
    nodes = _node_types(plan)
    ann_names = {c.index_name} | {n for _, n in (yield Fetch(index_leaves(c.schema, c.index_name)))}
    return CollectionInfo(
        name=c.name,
        schema=c.schema,
        chunks=chunks,
        entities=entities,
        dim=row["dim"],
        distance=row["distance"],
        text_config=row["text_config"],
        keyword=stored_keyword(row.get("keyword")).value,
        schema_version=row["schema_version"],
        ann_index=row["ann_index"],
        embedder=row.get("embedder"),
        indexes=tuple(name for (name,) in indexes),
        server_version=server,
        pgvector_version=pgvector[0][0] if pgvector else None,
        search_plan=tuple(sorted(nodes)),
        uses_ann_index=any(node.rsplit(" using ", 1)[-1] in ann_names for node in nodes),
    )


def _node_types(plan: Any) -> set[str]:
    """The node types of an ``EXPLAIN (FORMAT JSON)`` plan, with the index each one uses."""
    found: set[str] = set()
    stack = [plan[0]["Plan"]] if isinstance(plan, list) else [plan]
    while stack:
        node = stack.pop()
        used = f" using {node['Index Name']}" if "Index Name" in node else ""
        found.add(node.get("Node Type", "?") + used)
        stack.extend(node.get("Plans", []))
    return found
