"""Keyword and hybrid statements: full-text matches, and text and vector candidates fused into
one ranking, in one statement.

Both candidate lists are computed by the database in CTEs of a single ``SELECT`` and fused
there, so a hybrid query costs one round trip, and the filter applies to both sides. Pure
builders: none of them touches a connection.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.sql.elements import ColumnElement

from rag_pgstore.schema import Collection
from rag_pgstore.sql.search import chunk_columns, distance_expr, joined, query_placeholder
from rag_pgstore.types import Fusion, HybridOptions

__all__ = [
    "any_lexeme",
    "fused_select",
    "fused_template",
    "text_matches",
    "text_select",
    "text_template",
    "websearch_query",
]


def websearch_query(collection: Collection, text: str) -> ColumnElement[Any]:
    """The ``tsquery`` of ``text`` as ``websearch_to_tsquery`` reads it: all words, quoted
    phrases, ``or``, ``-exclusions``."""
    config = sa.cast(sa.literal(collection.text_config), pg.REGCONFIG)
    return sa.func.websearch_to_tsquery(config, text)


def any_lexeme(tsquery_terms: list[str]) -> ColumnElement[Any]:
    """A ``tsquery`` matching any of ``tsquery_terms`` (lexemes quoted for tsquery input)."""
    return sa.cast(sa.literal(" | ".join(tsquery_terms), sa.Text), pg.TSQUERY)


def _rescaled(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """Min-max rescale ``value`` to [0, 1] over the candidate set (1 when all are equal)."""
    low = sa.func.min(value).over()
    high = sa.func.max(value).over()
    return sa.func.coalesce((value - low) / sa.func.nullif(high - low, 0.0), 1.0)


def text_matches(
    collection: Collection, query: ColumnElement[Any], where: ColumnElement[bool]
) -> sa.Select[Any]:
    """``chunk_id, text_score`` of the chunks matching the ``tsquery``, by ``ts_rank``, best
    first (add a limit)."""
    table = collection.table
    tsquery = sa.select(query.label("q")).cte("tsq")
    # Normalisation 1 divides by 1 + log(document length): long chunks do not win merely by
    # repeating words. It ranked best of ts_rank/ts_rank_cd and their normalisations on our
    # evaluation (docs/results/hybrid-eval.md).
    rank = sa.func.ts_rank(table.c.tsv, tsquery.c.q, 1)
    return (
        sa.select(table.c.chunk_id, rank.label("text_score"))
        .select_from(table.join(tsquery, table.c.tsv.op("@@")(tsquery.c.q)))
        .where(where)
        .order_by(rank.desc(), table.c.chunk_id)
    )


def text_select(collection: Collection, matches: sa.Select[Any], *, k: int) -> sa.Select[Any]:
    """Keyword search alone: chunk columns plus ``score`` (the text rank), best first.

    ``matches`` is ``chunk_id, text_score`` best first: :func:`text_matches` (``ts_rank``) or
    ``bm25.matches``.
    """
    table = collection.table
    ranked = matches.limit(k).subquery("matches")
    return (
        sa.select(*chunk_columns(table, with_embeddings=False), ranked.c.text_score.label("score"))
        .select_from(ranked.join(table, joined(collection, ranked)))
        .order_by(ranked.c.text_score.desc(), table.c.chunk_id)
    )


def fused_select(
    collection: Collection,
    query: ColumnElement[Any],
    text_matches: sa.Select[Any],
    *,
    k: int,
    where: ColumnElement[bool] | None,
    options: HybridOptions,
) -> sa.Select[Any]:
    """Rows of the chunk columns plus ``score`` (fused) and ``distance`` (``NULL`` if text-only).

    ``text_matches`` is the keyword leg, ``chunk_id, text_score`` best first (filtered already).
    """
    table = collection.table
    where = where if where is not None else sa.true()
    vector_k, text_k = options.legs(k)

    distance = distance_expr(collection, query)
    nearest = (
        sa.select(table.c.chunk_id, distance.label("distance"))
        .where(where)
        .order_by(distance)
        .limit(vector_k)
        .subquery("nearest")
    )
    vec = (
        sa.select(
            nearest.c.chunk_id,
            nearest.c.distance,
            sa.func.row_number().over(order_by=nearest.c.distance).label("rank"),
            _rescaled(-nearest.c.distance).label("rescaled"),  # nearest -> 1, farthest -> 0
        )
        # A zero vector stored before zero vectors were refused has a NaN cosine distance,
        # which would make every rescaled score NaN. (PostgreSQL: NaN = NaN, so <> drops it.)
        .where(nearest.c.distance != sa.literal(float("nan"), sa.Float))
        .cte("vec")
    )

    matches = text_matches.limit(text_k).subquery("matches")
    txt = sa.select(
        matches.c.chunk_id,
        sa.func.row_number().over(order_by=matches.c.text_score.desc()).label("rank"),
        _rescaled(matches.c.text_score).label("rescaled"),
    ).cte("txt")

    alpha = options.vector_weight
    vec_part: ColumnElement[Any]
    txt_part: ColumnElement[Any]
    if options.fusion is Fusion.RRF:
        vec_part = alpha / (options.rrf_k + vec.c.rank)
        txt_part = (1.0 - alpha) / (options.rrf_k + txt.c.rank)
    else:
        vec_part = alpha * vec.c.rescaled
        txt_part = (1.0 - alpha) * txt.c.rescaled
    fused = (
        sa.select(
            sa.func.coalesce(vec.c.chunk_id, txt.c.chunk_id).label("chunk_id"),
            vec.c.distance,
            (sa.func.coalesce(vec_part, 0.0) + sa.func.coalesce(txt_part, 0.0)).label("score"),
        )
        .select_from(vec.join(txt, vec.c.chunk_id == txt.c.chunk_id, full=True))
        .cte("fused")
    )
    return (
        sa.select(*chunk_columns(table, with_embeddings=False), fused.c.score, fused.c.distance)
        .select_from(fused.join(table, joined(collection, fused)))
        .order_by(fused.c.score.desc(), fused.c.distance.asc().nulls_last(), table.c.chunk_id)
        .limit(k)
    )


# A statement built once and run with bound values skips SQLAlchemy's construction, which for
# the fused statement costs more client time than its vector leg takes on the server. Only
# for a plain (unfiltered) BM25 search: ``text_matches`` is part of the key, so it must be
# the statement built once per collection (``bm25.built_once``).


@functools.lru_cache(maxsize=256)
def fused_template(
    collection: Collection, text_matches: sa.Select[Any], *, k: int, options: HybridOptions
) -> sa.Select[Any]:
    """:func:`fused_select` without a filter, for the query vector bound as ``query``."""
    return fused_select(
        collection, query_placeholder(collection), text_matches, k=k, where=None, options=options
    )


@functools.lru_cache(maxsize=256)
def text_template(
    collection: Collection, text_matches: sa.Select[Any], *, k: int
) -> sa.Select[Any]:
    """:func:`text_select`, cached for a ``text_matches`` built once."""
    return text_select(collection, text_matches, k=k)
