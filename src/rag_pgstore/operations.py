"""Every store operation as a plan: validate eagerly, then yield steps for a driver to run.

A function here checks its arguments when called (so bad input fails before any connection is
taken) and returns a generator; ``steps.run`` or ``steps.run_async`` executes it in one
transaction. Nothing here knows whether it runs sync or async.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from rag_pgstore import statements as st
from rag_pgstore.errors import InvalidChunkError, SchemaError, UnsupportedError
from rag_pgstore.filters import compile_filter
from rag_pgstore.hybrid import HybridOptions, TextMode
from rag_pgstore.hybrid import hybrid_search as hybrid_statement
from rag_pgstore.hybrid import text_search as text_statement
from rag_pgstore.mmr import mmr_select
from rag_pgstore.records import (
    Chunk,
    Distance,
    HnswIndex,
    IvfflatIndex,
    ScoredChunk,
    SearchTuning,
    StoredChunk,
)
from rag_pgstore.schema import (
    MAX_INDEXED_DIM,
    MIGRATIONS,
    SCHEMA_VERSION,
    Collection,
    ann_index,
)
from rag_pgstore.steps import Copy, Execute, Fetch, Plan
from rag_pgstore.validate import encode_batch, encode_query

MIN_PGVECTOR = (0, 7, 0)  # halfvec, L1 distance and binary COPY of both
DEFAULT_BATCH = 5_000

_pg_extension = sa.table(
    "pg_extension", sa.column("extname"), sa.column("extversion"), schema="pg_catalog"
)
_pg_ts_config = sa.table("pg_ts_config", sa.column("cfgname"), schema="pg_catalog")


def _lock(collection: Collection) -> Execute:
    """Serialise setup and index changes of one collection across processes."""
    key = f"rag_pgstore:{collection.schema}.{collection.name}"
    return Execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(key, 0))))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def setup(collection: Collection, *, create_extension: bool = True) -> Plan[None]:
    """Create or upgrade the collection's table, idempotently."""
    c = collection
    yield _lock(c)
    if create_extension:
        yield Execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    found = yield Fetch(
        sa.select(_pg_extension.c.extversion).where(_pg_extension.c.extname == "vector")
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
    configs = yield Fetch(sa.select(_pg_ts_config.c.cfgname).order_by(_pg_ts_config.c.cfgname))
    names = [row[0] for row in configs]
    if c.text_config not in names:
        raise UnsupportedError(
            f"expected text_config to be one of {', '.join(names)}, got {c.text_config!r}"
        )
    if c.schema != "public":
        yield Execute(sa.schema.CreateSchema(c.schema, if_not_exists=True))
    registry = c.registry
    yield Execute(sa.schema.CreateTable(registry, if_not_exists=True))
    found = yield Fetch(sa.select(registry).where(registry.c.name == c.name))
    if found:
        row = found[0]._mapping
        _check_matches(c, row)
        version = row["schema_version"]
    else:
        existing = yield Fetch(sa.select(sa.func.to_regclass(f"{c.schema}.{c.name}")))
        if existing[0][0] is not None:
            raise SchemaError(
                f"expected no table named {c.schema}.{c.name} outside rag_pgstore, found one; "
                "choose another collection name"
            )
        version = 0
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
    }
    upsert = pg.insert(registry).values(values)
    yield Execute(
        upsert.on_conflict_do_update(
            index_elements=[registry.c.name],
            set_={"schema_version": SCHEMA_VERSION, "upgraded_at": sa.func.now()},
        )
    )


def drop(c: Collection) -> Plan[None]:
    """Drop the collection's table and forget it in the registry."""
    yield _lock(c)
    yield Execute(sa.schema.DropTable(c.table, if_exists=True))
    registry = c.registry
    exists = yield Fetch(sa.select(sa.func.to_regclass(f"{c.schema}.{registry.name}")))
    if exists[0][0] is not None:
        yield Execute(sa.delete(registry).where(registry.c.name == c.name))


def _check_matches(c: Collection, row: Mapping[str, Any]) -> None:
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


def upsert(
    collection: Collection, chunks: Iterable[Chunk], *, batch_size: int = DEFAULT_BATCH
) -> Plan[int]:
    """Write chunks (insert or fully replace by ``chunk_id``); return how many rows changed."""
    if isinstance(chunks, (str, bytes, Chunk)) or not isinstance(chunks, Iterable):
        raise InvalidChunkError(f"expected an iterable of Chunk, got {type(chunks).__name__}")
    if batch_size < 1:
        raise InvalidChunkError(f"expected batch_size >= 1, got {batch_size}")
    if isinstance(chunks, Sequence) and chunks:
        # Validate a whole in-memory batch before a connection is even taken, and let the last
        # duplicate win here, so the database need not deduplicate.
        rows = encode_batch(chunks, dim=collection.dim, vector_type=collection.vector_type)
        latest = list({row[1]: row for row in rows}.values())
        return _upsert(collection, iter([latest]), unique=True)
    return _upsert(collection, _encode_stream(collection, chunks, batch_size), unique=False)


def _encode_stream(c: Collection, chunks: Iterable[Chunk], batch_size: int) -> Iterator[list[Any]]:
    seq = 0
    iterator = iter(chunks)
    while batch := list(itertools.islice(iterator, batch_size)):
        rows = encode_batch(batch, dim=c.dim, vector_type=c.vector_type, first_seq=seq)
        seq += len(rows)
        yield rows


UPSERT_WORK_MEM = "64MB"  # sorting the staged rows by chunk_id in memory, not on disk


def _upsert(c: Collection, batches: Iterator[list[Any]], *, unique: bool) -> Plan[int]:
    staged = False
    for rows in batches:
        if not staged:
            yield Execute(sa.schema.CreateTable(c.staging))
            staged = True
        yield Copy(st.stage_copy(), st.COPY_TYPES, rows)
    if not staged:
        return 0
    yield Execute(st.set_local_many({"work_mem": UPSERT_WORK_MEM}))
    changed: int = yield Execute(st.upsert_from_stage(c, deduplicate=not unique))
    return changed


def _ids(ids: Iterable[str], what: str) -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Iterable):
        raise InvalidChunkError(f"expected a list of {what}, got {type(ids).__name__} {ids!r}")
    values = list(dict.fromkeys(ids))
    for value in values:
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidChunkError(f"expected {what} to be strings without NUL, got {value!r}")
    return values


def _any(values: list[str]) -> Any:
    # One array parameter, however many ids: no 65,535-parameter ceiling.
    return sa.any_(sa.bindparam(None, values, type_=pg.ARRAY(sa.Text)))


def get(
    c: Collection, ids: Iterable[str], *, with_embeddings: bool = False
) -> Plan[list[StoredChunk]]:
    wanted = _ids(ids, "chunk ids")
    where = c.table.c.chunk_id == _any(wanted)
    return _fetch_chunks(st.select_chunks(c, where, with_embeddings=with_embeddings))


def _fetch_chunks(statement: sa.Select[Any]) -> Plan[list[StoredChunk]]:
    rows = yield Fetch(statement)
    return [to_stored(row._mapping) for row in rows]


def count(c: Collection, filter: Mapping[str, Any] | None = None) -> Plan[int]:
    return _scalar(st.count(c, compile_filter(filter, c.table)))


def _scalar(statement: sa.Select[Any]) -> Plan[Any]:
    rows = yield Fetch(statement)
    return rows[0][0]


def delete_where(c: Collection, where: Any) -> Plan[int]:
    deleted: int = yield Execute(st.delete(c, where))
    return deleted


def delete(c: Collection, ids: Iterable[str]) -> Plan[int]:
    return delete_where(c, c.table.c.chunk_id == _any(_ids(ids, "chunk ids")))


def delete_entities(c: Collection, entity_ids: Iterable[str]) -> Plan[int]:
    return delete_where(c, c.table.c.entity_id == _any(_ids(entity_ids, "entity ids")))


def delete_filtered(c: Collection, filter: Mapping[str, Any]) -> Plan[int]:
    if not filter:
        raise InvalidChunkError("expected a non-empty filter; use clear() to delete every chunk")
    return delete_where(c, compile_filter(filter, c.table))


def clear(c: Collection) -> Plan[int]:
    return delete_where(c, sa.true())


def _check_k(k: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidChunkError(f"expected {name} to be a positive int, got {k!r}")
    return k


def search(
    c: Collection,
    query: Sequence[float],
    *,
    k: int = 4,
    filter: Mapping[str, Any] | None = None,
    offset: int = 0,
    min_score: float | None = None,
    tuning: SearchTuning | None = None,
    with_embeddings: bool = False,
) -> Plan[list[ScoredChunk]]:
    """The ``k`` chunks nearest to ``query``; see :meth:`ChunkStore.search`."""
    _check_k(k)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidChunkError(f"expected offset to be an int >= 0, got {offset!r}")
    vector = st.query_param(c, encode_query(query, c.dim))
    where = compile_filter(filter, c.table) if filter else None
    return _search(
        c,
        vector,
        where,
        k=k,
        offset=offset,
        min_score=min_score,
        tuning=tuning,
        with_embeddings=with_embeddings,
    )


def search_like(
    c: Collection,
    chunk_id: str,
    *,
    k: int = 4,
    filter: Mapping[str, Any] | None = None,
    tuning: SearchTuning | None = None,
) -> Plan[list[ScoredChunk]]:
    """The ``k`` chunks nearest to the stored chunk ``chunk_id``, excluding itself."""
    _check_k(k)
    (wanted,) = _ids([chunk_id], "chunk id")
    table = c.table
    vector = sa.select(table.c.embedding).where(table.c.chunk_id == wanted).scalar_subquery()
    # A missing chunk_id makes the subquery NULL: no neighbours rather than NULL distances.
    where = sa.and_(table.c.chunk_id != wanted, vector.is_not(None))
    if filter:
        where = sa.and_(where, compile_filter(filter, table))
    return _search(c, vector, where, k=k, tuning=tuning)


def _search(
    c: Collection,
    vector: Any,
    where: Any,
    *,
    k: int,
    offset: int = 0,
    min_score: float | None = None,
    tuning: SearchTuning | None = None,
    with_embeddings: bool = False,
) -> Plan[list[ScoredChunk]]:
    tuning = tuning or SearchTuning()
    exact = tuning.exact
    if exact is None and where is not None:
        plan = yield Fetch(st.Explain(sa.select(sa.literal(1)).select_from(c.table).where(where)))
        exact = plan[0][0][0]["Plan"]["Plan Rows"] <= tuning.exact_below
    settings = scan_settings(tuning, filtered=where is not None and not exact)
    if settings:
        yield Execute(st.set_local_many(settings))
    statement = st.vector_search(
        c,
        vector,
        k=k,
        offset=offset,
        where=where,
        exact=bool(exact),
        with_embeddings=with_embeddings,
    )
    rows = yield Fetch(statement)
    # Iterative scans may return rows slightly out of order; a stable re-sort of k rows is free.
    hits = sorted(
        (to_scored(row._mapping, c.distance) for row in rows), key=lambda h: h.distance or 0.0
    )
    if min_score is not None:
        hits = [hit for hit in hits if hit.score >= min_score]
    return hits


def mmr_search(
    c: Collection,
    query: Sequence[float],
    *,
    k: int = 4,
    fetch_k: int = 20,
    lambda_mult: float = 0.5,
    filter: Mapping[str, Any] | None = None,
    tuning: SearchTuning | None = None,
) -> Plan[list[ScoredChunk]]:
    """``k`` of the ``fetch_k`` nearest chunks, chosen by maximal marginal relevance."""
    _check_k(k)
    _check_k(fetch_k, "fetch_k")
    if not 0.0 <= lambda_mult <= 1.0:
        raise InvalidChunkError(f"expected 0 <= lambda_mult <= 1, got {lambda_mult}")
    values = encode_query(query, c.dim)
    where = compile_filter(filter, c.table) if filter else None
    vector = st.query_param(c, values)
    return _mmr(
        _search(c, vector, where, k=max(k, fetch_k), tuning=tuning, with_embeddings=True),
        values,
        k,
        lambda_mult,
    )


def _mmr(
    candidates: Plan[list[ScoredChunk]], query: list[float], k: int, lambda_mult: float
) -> Plan[list[ScoredChunk]]:
    hits = yield from candidates
    order = mmr_select(query, [h.chunk.embedding or [] for h in hits], k=k, lambda_mult=lambda_mult)
    return [hits[i] for i in order]


def hybrid_search(
    c: Collection,
    query: Sequence[float],
    text: str,
    *,
    k: int = 4,
    filter: Mapping[str, Any] | None = None,
    options: HybridOptions | None = None,
    tuning: SearchTuning | None = None,
) -> Plan[list[ScoredChunk]]:
    """Full-text and vector search fused in one statement; see :class:`HybridOptions`."""
    _check_k(k)
    text = _text(text)
    vector = st.query_param(c, encode_query(query, c.dim))
    where = compile_filter(filter, c.table) if filter else None
    statement = hybrid_statement(
        c, vector, text, k=k, where=where, options=options or HybridOptions()
    )
    return _hybrid(statement, scan_settings(tuning or SearchTuning(), filtered=where is not None))


def text_search(
    c: Collection,
    text: str,
    *,
    k: int = 4,
    filter: Mapping[str, Any] | None = None,
    mode: TextMode = TextMode.ANY,
) -> Plan[list[ScoredChunk]]:
    """Full-text search alone, ranked by ``ts_rank``; ``distance`` is ``None``."""
    _check_k(k)
    where = compile_filter(filter, c.table) if filter else None
    return _hybrid(text_statement(c, _text(text), k=k, where=where, mode=TextMode(mode)), {})


def _text(text: object) -> str:
    if not isinstance(text, str) or "\x00" in text:
        raise InvalidChunkError(f"expected the query text to be a str without NUL, got {text!r}")
    return text


def _hybrid(statement: sa.Select[Any], settings: dict[str, str]) -> Plan[list[ScoredChunk]]:
    if settings:
        yield Execute(st.set_local_many(settings))
    rows = yield Fetch(statement)
    hits = []
    for row in rows:
        mapping = row._mapping
        d = mapping.get("distance")
        hits.append(
            ScoredChunk(chunk=to_stored(mapping), score=float(mapping["score"]), distance=d)
        )
    return hits


def scan_settings(tuning: SearchTuning, *, filtered: bool) -> dict[str, str]:
    """The ``SET LOCAL`` values for one query. Filtered ANN queries scan iteratively by default."""
    settings: dict[str, str] = {}
    if tuning.ef_search is not None:
        settings["hnsw.ef_search"] = str(tuning.ef_search)
    if tuning.probes is not None:
        settings["ivfflat.probes"] = str(tuning.probes)
    iterative = tuning.iterative_scan or ("strict_order" if filtered else None)
    if iterative is not None:
        settings["hnsw.iterative_scan"] = iterative
        # IVFFlat only scans iteratively in relaxed order; results are re-sorted anyway.
        settings["ivfflat.iterative_scan"] = "off" if iterative == "off" else "relaxed_order"
    if tuning.max_scan_tuples is not None:
        settings["hnsw.max_scan_tuples"] = str(tuning.max_scan_tuples)
    return settings


def create_index(c: Collection, spec: HnswIndex | IvfflatIndex) -> Plan[bool]:
    """Build the ANN index ``spec`` describes, replacing another; ``False`` if it already exists."""
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
        raise InvalidChunkError(f"expected HnswIndex or IvfflatIndex, got {type(spec).__name__}")
    return _create_index(c, using, options)


def _create_index(c: Collection, using: str, options: dict[str, int]) -> Plan[bool]:
    wanted = {"using": using, **options}
    registry = c.registry
    yield _lock(c)
    found = yield Fetch(sa.select(registry.c.ann_index).where(registry.c.name == c.name))
    if not found:
        raise SchemaError(f"expected collection {c.name!r} to exist; call setup() first")
    index = ann_index(c, using, options)
    present = yield Fetch(sa.select(sa.func.to_regclass(f"{c.schema}.{c.index_name}")))
    if found[0][0] == wanted and present[0][0] is not None:
        return False
    yield Execute(sa.schema.DropIndex(index, if_exists=True))
    yield Execute(sa.schema.CreateIndex(index))
    yield Execute(sa.update(registry).where(registry.c.name == c.name).values(ann_index=wanted))
    return True


def drop_index(c: Collection) -> Plan[None]:
    yield _lock(c)
    yield Execute(sa.schema.DropIndex(ann_index(c, "hnsw", {}), if_exists=True))
    registry = c.registry
    yield Execute(sa.update(registry).where(registry.c.name == c.name).values(ann_index=None))


def _floats(value: Any) -> list[float] | None:
    """pgvector returns numpy arrays (0.3), lists, or its own vector objects (0.4+)."""
    if value is None:
        return None
    if hasattr(value, "to_list"):
        return [float(v) for v in value.to_list()]
    if hasattr(value, "tolist"):
        return [float(v) for v in value.tolist()]
    return [float(v) for v in value]


def to_stored(row: Mapping[str, Any]) -> StoredChunk:
    return StoredChunk(
        chunk_id=row["chunk_id"],
        entity_id=row["entity_id"],
        chunk_index=row["chunk_index"],
        total_chunks=row["total_chunks"],
        content=row["content"],
        metadata=row["metadata"],
        content_hash=row["content_hash"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        embedding=_floats(row.get("embedding")),
    )


def to_scored(row: Mapping[str, Any], distance: Distance) -> ScoredChunk:
    d = float(row["distance"])
    return ScoredChunk(chunk=to_stored(row), score=distance.score(d), distance=d)
