"""Read and search chunks, as plans (see ``driver/steps.py``).

Each function validates its arguments when called, so bad input fails before a connection is
taken, and returns a generator of steps: statements and the settings they need. Which form of
a one-round-trip read to send, and how, is the driver's business."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from rag_pgstore.codec import check_ids, encode_query, wire_vector
from rag_pgstore.driver.steps import Execute, Fetch, IndexedForm, Plan, Read
from rag_pgstore.errors import InvalidInputError, show
from rag_pgstore.ops.keyword import keyword_matches
from rag_pgstore.ops.mmr import mmr_select
from rag_pgstore.schema import Collection
from rag_pgstore.sql import bm25
from rag_pgstore.sql import hybrid as hy
from rag_pgstore.sql import search as st
from rag_pgstore.sql.filters import compile_filter
from rag_pgstore.sql.writes import set_local_many
from rag_pgstore.types import (
    Distance,
    Filter,
    HybridOptions,
    ScoredChunk,
    SearchTuning,
    StoredChunk,
    TextMode,
    choice,
    ef_search_for,
    iterative_for,
)


def get(
    c: Collection, ids: Iterable[str], *, with_embeddings: bool = False
) -> Plan[list[StoredChunk]]:
    """Fetch chunks by id, ordered by (entity_id, chunk_index); missing ids are skipped."""
    wanted = check_ids(ids, "chunk ids")
    where = c.scoped(c.table.c.chunk_id == st.any_of(wanted))
    return _fetch_chunks(st.select_chunks(c, where, with_embeddings=with_embeddings))


def get_where(
    c: Collection,
    filter: Filter | None = None,
    *,
    limit: int | None = None,
    with_embeddings: bool = False,
) -> Plan[list[StoredChunk]]:
    """Chunks matching ``filter`` (all of them without one), by (entity_id, chunk_index)."""
    if limit is not None:
        _check_k(limit, "limit")
    statement = st.select_chunks(c, _filtered(c, filter), with_embeddings=with_embeddings)
    return _fetch_chunks(statement.limit(limit))


def _fetch_chunks(statement: sa.Select[Any]) -> Plan[list[StoredChunk]]:
    rows = yield Fetch(statement)
    return [to_stored(row._mapping) for row in rows]


def count(c: Collection, filter: Filter | None = None) -> Plan[int]:
    """Count chunks, optionally only those matching ``filter``."""
    return _scalar(st.count(c, _filtered(c, filter)))


def _filtered(c: Collection, filter: Filter | None) -> ColumnElement[bool]:
    """``filter`` compiled, within the view's tenant."""
    return c.scoped(compile_filter(filter, c.table))


def _where(c: Collection, filter: Filter | None) -> ColumnElement[bool] | None:
    """``filter`` compiled (``None`` without one), within the view's tenant."""
    return c.scoped(compile_filter(filter, c.table) if filter else None)


def _scalar(statement: sa.Select[Any]) -> Plan[Any]:
    rows = yield Fetch(statement)
    return rows[0][0]


def _check_k(k: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"expected {name} to be a positive int, got {k!r}")
    return k


def search(
    c: Collection,
    query: Sequence[float],
    *,
    k: int = 4,
    filter: Filter | None = None,
    offset: int = 0,
    min_score: float | None = None,
    tuning: SearchTuning | None = None,
    with_embeddings: bool = False,
) -> Plan[list[ScoredChunk]]:
    """The ``k`` chunks nearest to ``query`` (after skipping ``offset``), nearest first.

    ``filter`` is a metadata filter (see ``sql/filters.py``); ``min_score`` drops hits whose
    relevance score (:meth:`Distance.score`) is lower; ``tuning`` sets per-query index
    parameters; ``with_embeddings`` returns each hit's vector too.
    """
    _check_k(k)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInputError(f"expected offset to be an int >= 0, got {offset!r}")
    values = encode_query(query, c.dim, vector_type=c.vector_type, nonzero=c.nonzero)
    tuning = tuning or SearchTuning()
    if not filter and not c.tenancy and not with_embeddings and not _scan_knobs(tuning):
        # The common case, one statement: run it as a Read (one round trip, no transaction).
        ef_search = ef_search_for(tuning.ef_search, k + offset)
        return _nearest(
            c, values, k=k, offset=offset, exact=tuning.exact, min_score=min_score, ef=ef_search
        )
    vector = st.query_param(c, values.tolist())
    where = _where(c, filter)
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
    filter: Filter | None = None,
    tuning: SearchTuning | None = None,
) -> Plan[list[ScoredChunk]]:
    """More like this: the ``k`` chunks nearest to the stored chunk ``chunk_id``, excluding it."""
    _check_k(k)
    (wanted,) = check_ids([chunk_id], "chunk id")
    table = c.table
    own = c.scoped(table.c.chunk_id == wanted)
    vector = sa.select(table.c.embedding).where(own).scalar_subquery()
    # A missing chunk_id makes the subquery NULL: no neighbours rather than NULL distances.
    where: ColumnElement[bool] = sa.and_(table.c.chunk_id != wanted, vector.is_not(None))
    where = c.scoped(sa.and_(where, compile_filter(filter, table)) if filter else where)
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
    settings = {} if exact else scan_settings(tuning, filtered=where is not None, wanted=k + offset)
    if settings:
        yield Execute(set_local_many(settings))
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
    return _ranked([row._mapping for row in rows], c.distance, min_score)


def _nearest(
    c: Collection,
    values: npt.NDArray[np.float64],
    *,
    k: int,
    offset: int,
    exact: bool | None,
    min_score: float | None,
    ef: int,
) -> Plan[list[ScoredChunk]]:
    params = {"query": wire_vector(values, c.vector_type)}
    settings = (("hnsw.ef_search", str(ef)),)
    if exact is None:  # the driver sends whichever form is faster for the table as it is
        sql, fixed = st.nearest_read(c, k, offset, "scan")
        ann_sql, _ = st.nearest_read(c, k, offset, "ann")
        indexed = IndexedForm(ann_sql, c.schema, c.name)
        step = Read(sql, {**dict(fixed), **params}, settings, indexed)
    else:
        sql, fixed = st.nearest_read(c, k, offset, "exact" if exact else "ann")
        step = Read(sql, {**dict(fixed), **params}, settings)
    rows = yield step
    return _ranked(rows, c.distance, min_score)


def _ranked(
    rows: Sequence[Mapping[str, Any]], distance: Distance, min_score: float | None
) -> list[ScoredChunk]:
    # Iterative scans may return rows slightly out of order; re-sorting k rows is free, and the
    # chunk id breaks ties the same way every time.
    hits = sorted(
        (to_scored(row, distance) for row in rows),
        key=lambda h: (h.distance or 0.0, h.chunk.chunk_id),
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
    filter: Filter | None = None,
    tuning: SearchTuning | None = None,
) -> Plan[list[ScoredChunk]]:
    """Pick ``k`` diverse chunks from the ``fetch_k`` nearest by maximal marginal relevance.

    ``lambda_mult`` 1 ranks by relevance only, 0 by diversity only.
    """
    _check_k(k)
    _check_k(fetch_k, "fetch_k")
    if not 0.0 <= lambda_mult <= 1.0:
        raise InvalidInputError(f"expected 0 <= lambda_mult <= 1, got {lambda_mult}")
    values = encode_query(query, c.dim, vector_type=c.vector_type, nonzero=c.nonzero).tolist()
    where = _where(c, filter)
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
    filter: Filter | None = None,
    options: HybridOptions | None = None,
    tuning: SearchTuning | None = None,
) -> Plan[list[ScoredChunk]]:
    """Keyword search on ``text`` and vector search on ``query``, fused into one ranking.

    One statement does both searches and the fusion (relative-score by default, see
    :class:`HybridOptions`), after one small one that reads the query's lexemes; the filter
    applies to both legs. ``score`` is the fused score; ``distance`` is ``None`` for chunks
    only the keyword leg found.
    """
    _check_k(k)
    text = _text(text)
    options = options or HybridOptions()
    vector = encode_query(query, c.dim, vector_type=c.vector_type, nonzero=c.nonzero).tolist()
    where = _where(c, filter)
    vector_k, _ = options.legs(k)
    settings = scan_settings(tuning or SearchTuning(), filtered=where is not None, wanted=vector_k)
    return _hybrid_plan(c, vector, text, k=k, where=where, options=options, settings=settings)


def _hybrid_plan(
    c: Collection,
    vector: list[float],
    text: str,
    *,
    k: int,
    where: ColumnElement[bool] | None,
    options: HybridOptions,
    settings: dict[str, str],
) -> Plan[list[ScoredChunk]]:
    matches, params = yield from keyword_matches(
        c,
        text,
        mode=options.text_mode,
        where=where,
        candidates=options.candidates(k),
        settings=settings,
    )
    if bm25.built_once(c, matches):
        # BM25 without a filter: its statements are built once, the values are bound.
        statement = hy.fused_template(c, matches, k=k, options=options)
        return (yield from _hybrid(statement, {}, {**params, "query": vector}))
    statement = hy.fused_select(
        c, st.query_param(c, vector), matches, k=k, where=where, options=options
    )
    return (yield from _hybrid(statement, {}, params))


def text_search(
    c: Collection,
    text: str,
    *,
    k: int = 4,
    filter: Filter | None = None,
    mode: TextMode = TextMode.ANY,
) -> Plan[list[ScoredChunk]]:
    """Keyword search alone, ranked by the collection's keyword mode (BM25 or ``ts_rank``, see
    :class:`KeywordSearch`); ``distance`` is ``None``."""
    _check_k(k)
    text = _text(text)
    where = _where(c, filter)
    return _text_plan(c, text, k, where, choice(TextMode, mode, "mode"))


def _text_plan(
    c: Collection, text: str, k: int, where: ColumnElement[bool] | None, mode: TextMode
) -> Plan[list[ScoredChunk]]:
    matches, params = yield from keyword_matches(
        c, text, mode=mode, where=where, candidates=max(bm25.CANDIDATES, 10 * k)
    )
    cached = bm25.built_once(c, matches)
    statement = hy.text_template(c, matches, k=k) if cached else hy.text_select(c, matches, k=k)
    return (yield from _hybrid(statement, {}, params))


def _text(text: object) -> str:
    if not isinstance(text, str) or "\x00" in text:
        raise InvalidInputError(
            f"expected the query text to be a str without NUL, got {show(text)}"
        )
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidInputError(
            f"expected query text of at most {MAX_QUERY_CHARS:,} characters, got {len(text):,}; "
            "a search needs its words, not a document"
        )
    return text


MAX_QUERY_CHARS = 1 << 18  # far above any question; below PostgreSQL's 1 MiB tsvector limit


def _hybrid(
    statement: sa.Select[Any], settings: dict[str, str], params: dict[str, Any] | None = None
) -> Plan[list[ScoredChunk]]:
    if settings:
        yield Execute(set_local_many(settings))
    rows = yield Fetch(statement, params or None)
    hits = []
    for row in rows:
        mapping = row._mapping
        d = mapping.get("distance")
        hits.append(
            ScoredChunk(chunk=to_stored(mapping), score=float(mapping["score"]), distance=d)
        )
    return hits


def _scan_knobs(tuning: SearchTuning) -> bool:
    """Whether ``tuning`` sets anything but ``ef_search`` (which a Read applies itself)."""
    return any(
        value is not None
        for value in (tuning.probes, tuning.iterative_scan, tuning.max_scan_tuples)
    )


def scan_settings(tuning: SearchTuning, *, filtered: bool, wanted: int) -> dict[str, str]:
    """The ``SET LOCAL`` values for a query of ``wanted`` rows.

    Filtered ANN queries scan iteratively by default, and are planned for their own values:
    psycopg prepares a statement run five times, and PostgreSQL's generic plan for
    ``tenant_id = $1`` (or a metadata filter) assumes an average selectivity, so it sorts a
    large tenant's rows exactly (measured: 49 ms instead of 3 on 100k rows) and never uses
    a tenant's partial index.
    """
    settings = {"hnsw.ef_search": str(ef_search_for(tuning.ef_search, wanted))}
    if filtered:
        settings["plan_cache_mode"] = "force_custom_plan"
    if tuning.probes is not None:
        settings["ivfflat.probes"] = str(tuning.probes)
    iterative = iterative_for(tuning, filtered=filtered)
    if iterative is not None:
        settings["hnsw.iterative_scan"] = iterative
        # IVFFlat only scans iteratively in relaxed order; results are re-sorted anyway.
        settings["ivfflat.iterative_scan"] = "off" if iterative == "off" else "relaxed_order"
    if tuning.max_scan_tuples is not None:
        settings["hnsw.max_scan_tuples"] = str(tuning.max_scan_tuples)
    return settings


def to_floats(value: Any) -> list[float] | None:
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
        embedding=to_floats(row.get("embedding")),
        adapter_data=row.get("adapter_data"),
    )


def to_scored(row: Mapping[str, Any], distance: Distance) -> ScoredChunk:
    d = float(row["distance"])
    return ScoredChunk(chunk=to_stored(row), score=distance.score(d), distance=d)
