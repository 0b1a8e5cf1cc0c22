"""BM25 keyword ranking in plain PostgreSQL, from a bounded set of candidates.

Ranking every row that matches any query word (what ``ts_rank`` needs) costs as much as the
matches, which grows with the corpus. Here the GIN index on ``tsv`` hands out candidates in
*tiers*: the rows holding all of the query's rarest lexemes first, then each smaller subset of
them, in decreasing order of the subset's summed IDF, until ``candidates`` rows are in hand.
Only those are scored, with exact BM25:

    score(d) = sum over the query's lexemes t in d of
               idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
    idf(t)   = ln(1 + (N - df + 0.5) / (df + 0.5))

``tf`` comes from the row's ``tsv`` (its positions), ``dl`` (tokens in the row) from the
column the keyword trigger fills, ``N``, ``df`` and ``avgdl`` from PostgreSQL's own ANALYZE
statistics where it has them (``pg_stats``) and from exact counts where it does not. What is
approximate, and by how much, is measured in ``benchmarks/keyword.py`` and told in
docs/guide.md ("Keyword search"). Pure builders: nothing here touches a connection.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.sql.elements import ColumnElement

from rag_pgstore.schema import Collection
from rag_pgstore.types import BM25_B, BM25_K1

__all__ = [
    "CANDIDATES",
    "COMMON_SHARE",
    "MAX_TERMS",
    "NO_STATS",
    "TIER_TERMS",
    "Bm25Query",
    "Probe",
    "TermStats",
    "built_once",
    "matches",
    "no_matches",
    "plan_query",
    "probe",
    "stats_select",
    "term_stats",
    "tsquery_literal",
]

CANDIDATES = 800  # rows fetched per query at least: recall@10 0.97 on GCIDE at 200k rows
COMMON_SHARE = 0.05  # lexemes in more rows than this are scored but never make a tier
MAX_TERMS = 32  # query lexemes scored; a longer query keeps its rarest
TIER_TERMS = 6  # lexemes the tiers are made of: at most 63 subsets

_PG_CLASS = sa.table("pg_class", sa.column("oid"), sa.column("reltuples"), schema="pg_catalog")
_PG_STAT = sa.table(
    "pg_stat_user_tables",
    sa.column("relid"),
    sa.column("last_analyze"),
    sa.column("last_autoanalyze"),
    schema="pg_catalog",
)
_PG_STATS = sa.table(
    "pg_stats",
    sa.column("schemaname"),
    sa.column("tablename"),
    sa.column("attname"),
    sa.column("most_common_elems"),
    sa.column("most_common_elem_freqs"),
    sa.column("most_common_vals"),
    sa.column("most_common_freqs"),
    sa.column("histogram_bounds"),
    schema="pg_catalog",
)


@dataclass(frozen=True)
class TermStats:
    """What ANALYZE last saw of a collection: lexeme frequencies and the mean row length.

    ``frequency`` maps the most common lexemes to the share of rows holding them; every other
    lexeme is in fewer than ``floor`` of the rows, and is counted exactly when queried.
    """

    analyzed_at: datetime | None
    frequency: Mapping[str, float]
    floor: float
    avgdl: float | None


NO_STATS = TermStats(analyzed_at=None, frequency={}, floor=0.0, avgdl=None)


@dataclass(frozen=True)
class Bm25Query:
    """A planned BM25 query: its lexemes, their document frequencies (``None``: count them),
    the row count and mean length (``None``: compute them) and the candidate tiers."""

    lexemes: tuple[str, ...]
    df: tuple[float | None, ...]
    rows: float | None
    avgdl: float | None
    tiers: tuple[str, ...]
    candidates: int


def _regclass(c: Collection) -> ColumnElement[Any]:
    return sa.func.to_regclass(f"{c.schema}.{c.name}")


def probe(c: Collection, text: str, settings: Mapping[str, str] | None = None) -> Probe:
    """One row: the query's lexemes, the collection's keyword mode as registered (and whether
    it is registered), its estimated row count and when ANALYZE last ran on it. It also
    ``SET LOCAL``s ``settings`` (a hybrid search's scan settings), saving a round trip.

    The statement is built once per collection and set of setting names; the text and the
    setting values are its parameters.
    """
    names = tuple(settings or ())
    params: dict[str, Any] = {"probe_text": text}
    params.update({f"probe_setting_{n}": (settings or {})[name] for n, name in enumerate(names)})
    return Probe(_probe(c, names), params)


@dataclass(frozen=True)
class Probe:
    """A :func:`probe` statement and the values of its parameters."""

    statement: sa.Select[Any]
    params: dict[str, Any]


@functools.lru_cache(maxsize=256)
def _probe(c: Collection, settings: tuple[str, ...]) -> sa.Select[Any]:
    config = sa.cast(sa.literal(c.text_config), pg.REGCONFIG)
    registry = c.registry
    regclass = _regclass(c)
    text = sa.bindparam("probe_text", type_=sa.Text)
    return sa.select(
        sa.func.tsvector_to_array(sa.func.to_tsvector(config, text)).label("lexemes"),
        sa.select(registry.c.keyword)
        .where(registry.c.name == c.name)
        .scalar_subquery()
        .label("keyword"),
        sa.exists().where(registry.c.name == c.name).label("registered"),
        sa.select(_PG_CLASS.c.reltuples)
        .where(_PG_CLASS.c.oid == regclass)
        .scalar_subquery()
        .label("reltuples"),
        sa.select(sa.func.greatest(_PG_STAT.c.last_analyze, _PG_STAT.c.last_autoanalyze))
        .where(_PG_STAT.c.relid == regclass)
        .scalar_subquery()
        .label("analyzed_at"),
        *(
            sa.func.set_config(
                sa.literal(name, sa.Text), sa.bindparam(f"probe_setting_{n}", type_=sa.Text), True
            )
            for n, name in enumerate(settings)
        ),
    )


def stats_select(c: Collection) -> sa.Select[Any]:
    """The lexeme frequencies of ``tsv`` and the distribution of ``dl`` from ``pg_stats``."""
    s = _PG_STATS.c

    def of(name: str, value: ColumnElement[Any]) -> sa.ScalarSelect[Any]:
        where = (s.schemaname == c.schema) & (s.tablename == c.name) & (s.attname == name)
        return sa.select(value).where(where).scalar_subquery()

    # pg_stats holds these as anyarray, which only converts through its text form.
    texts = pg.ARRAY(sa.Text)
    ints = pg.ARRAY(sa.Integer)
    return sa.select(
        of("tsv", sa.cast(sa.cast(s.most_common_elems, sa.Text), texts)).label("elems"),
        of("tsv", s.most_common_elem_freqs).label("elem_freqs"),
        of("dl", sa.cast(sa.cast(s.most_common_vals, sa.Text), ints)).label("dl_values"),
        of("dl", s.most_common_freqs).label("dl_freqs"),
        of("dl", sa.cast(sa.cast(s.histogram_bounds, sa.Text), ints)).label("dl_bounds"),
    )


def term_stats(row: Mapping[str, Any], analyzed_at: datetime | None) -> TermStats:
    """:class:`TermStats` from a :func:`stats_select` row."""
    elems = row["elems"] or []
    freqs = row["elem_freqs"] or []
    # For tsvector, most_common_elem_freqs ends with two extra numbers: the least and the
    # greatest frequency of the elements.
    frequency = dict(zip(elems, freqs[: len(elems)], strict=False))
    floor = float(freqs[len(elems)]) if len(freqs) > len(elems) else 0.0
    return TermStats(
        analyzed_at=analyzed_at,
        frequency=frequency,
        floor=floor,
        avgdl=_mean(row["dl_values"] or [], row["dl_freqs"] or [], row["dl_bounds"] or []),
    )


def _mean(values: Sequence[int], freqs: Sequence[float], bounds: Sequence[int]) -> float | None:
    """The mean of a column from its most common values and its equal-depth histogram (of the
    remaining rows): each histogram bucket counts as its midpoint."""
    common = sum(freqs)
    total = sum(v * f for v, f in zip(values, freqs, strict=False))
    if len(bounds) >= 2:
        mids = [(lo + hi) / 2 for lo, hi in itertools.pairwise(bounds)]
        total += (1.0 - common) * sum(mids) / len(mids)
    elif not values:
        return None
    else:
        total /= common  # every row is one of the common values
    return total if total > 0 else None


def tsquery_literal(lexeme: str) -> str:
    """``lexeme`` quoted for ``tsquery`` input, so that no character of it is an operator."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def plan_query(
    lexemes: Sequence[str], *, rows: float | None, stats: TermStats, candidates: int
) -> Bm25Query:
    """Choose document frequencies and candidate tiers for the query's ``lexemes``.

    A lexeme ANALYZE tracks gets ``share * rows``; any other is counted exactly by the query
    (it is rare, so its posting list is short). The tiers are AND-queries over the rarest
    :data:`TIER_TERMS` lexemes held by at most :data:`COMMON_SHARE` of the rows (the two
    rarest if all are common), every subset of them, highest summed IDF first; then one
    OR-query of the query's other lexemes.
    """
    unique = list(dict.fromkeys(lexemes))
    known = rows is not None and rows > 0

    def estimate(term: str) -> float | None:
        if not known or term not in stats.frequency:
            return None
        return stats.frequency[term] * rows  # type: ignore[operator]

    def rarity(term: str) -> float:
        # For ordering only: an untracked lexeme is rarer than every tracked one.
        value = estimate(term)
        return value if value is not None else stats.floor * (rows or 0.0) / 2

    unique.sort(key=rarity)
    scored = unique[:MAX_TERMS]
    base = rows if rows is not None and known else 1_000_000.0

    def idf(term: str) -> float:
        df = rarity(term) if known else 1.0
        return math.log(1.0 + (base - df + 0.5) / (df + 0.5))

    # A lexeme in over 5% of the rows (and more rows than the budget) would make every tier
    # read its long posting list, and the rows it adds rank low anyway (measured: same
    # recall, less time); it is still scored.
    def common(term: str) -> bool:
        share = stats.frequency.get(term, 0.0)
        return known and share > COMMON_SHARE and share * base > candidates

    rare = [t for t in scored if not common(t)]
    tier_terms = (rare or scored[:2])[:TIER_TERMS]
    subsets = [
        subset
        for size in range(len(tier_terms), 0, -1)
        for subset in itertools.combinations(tier_terms, size)
    ]
    # Stable sort: equal sums (no statistics yet) keep larger subsets first.
    subsets.sort(key=lambda subset: -sum(idf(t) for t in subset))
    # Last, rows holding only the other lexemes: reached when the tiers found fewer rows than
    # the budget (a small collection, a query of rare words), so nothing that matches is lost.
    others = [t for t in scored if t not in tier_terms]
    rest = (" | ".join(tsquery_literal(t) for t in others),) if others else ()
    return Bm25Query(
        lexemes=tuple(scored),
        df=tuple(estimate(t) for t in scored),
        rows=rows if known else None,
        avgdl=stats.avgdl if known else None,
        tiers=tuple(" & ".join(tsquery_literal(t) for t in subset) for subset in subsets) + rest,
        candidates=candidates,
    )


def matches(
    c: Collection,
    query: Bm25Query,
    where: ColumnElement[bool] | None,
    required: ColumnElement[bool] | None = None,
) -> tuple[sa.Select[Any], dict[str, Any]]:
    """``chunk_id, text_score`` of the top candidates by BM25, best first (add a limit), and
    the values of its parameters (pass both to the driver's ``Fetch``).

    ``where`` (a metadata filter) and ``required`` (a must-match ``tsquery`` condition) apply
    inside the tiers, so rows they reject never take a candidate's place. Without them the
    statement is built once per collection: building it costs more than running it.
    """
    statement = (
        _unfiltered(c) if where is None and required is None else _matches(c, where, required)
    )
    params = {
        "bm25_lexemes": list(query.lexemes),
        "bm25_df": list(query.df),
        "bm25_queries": [tsquery_literal(t) for t in query.lexemes],
        "bm25_tiers": list(query.tiers),
        "bm25_candidates": query.candidates,
        "bm25_rows": query.rows,
        "bm25_avgdl": query.avgdl,
    }
    return statement, params


@functools.lru_cache(maxsize=64)
def _unfiltered(c: Collection) -> sa.Select[Any]:
    return _matches(c, None, None)


def built_once(c: Collection, statement: sa.Select[Any]) -> bool:
    """Whether ``statement`` is :func:`matches` without a filter: the same object for every
    query of the collection, so statements built around it can be kept too."""
    return statement is _unfiltered(c)


def _matches(
    c: Collection, where: ColumnElement[bool] | None, required: ColumnElement[bool] | None
) -> sa.Select[Any]:
    table = c.table
    texts = pg.ARRAY(sa.Text)
    tsqueries = pg.ARRAY(pg.TSQUERY)
    lexemes = sa.bindparam("bm25_lexemes", type_=texts)
    term = (
        sa.func.unnest(
            lexemes,
            sa.bindparam("bm25_df", type_=pg.ARRAY(sa.Float)),
            sa.cast(sa.bindparam("bm25_queries", type_=texts), tsqueries),
        )
        .table_valued("lexeme", "df", "q")
        .render_derived(name="term")
    )
    counted = (
        sa.select(sa.func.count())
        .select_from(table)
        .where(table.c.tsv.op("@@")(term.c.q))
        .scalar_subquery()
    )
    # NULL: not known from the statistics, so computed here (COALESCE only runs the count
    # when it must).
    rows = sa.func.coalesce(
        sa.bindparam("bm25_rows", type_=sa.Float),
        sa.select(sa.func.count()).select_from(table).scalar_subquery(),
    )
    known = (
        sa.select(term.c.lexeme, sa.func.coalesce(term.c.df, counted).label("df"))
        .select_from(term)
        .subquery("known")
    )
    # N at least df: an exact count can pass a reltuples that predates a bulk load.
    n = sa.func.greatest(rows, known.c.df)
    idf = (
        sa.select(
            known.c.lexeme,
            sa.func.ln(1.0 + (n - known.c.df + 0.5) / (known.c.df + 0.5)).label("weight"),
        )
        .select_from(known)
        .cte("idf")
        # Computed once: inlined into the per-candidate score, its exact counts would run
        # again for every candidate.
        .prefix_with("MATERIALIZED")
    )

    tiers = sa.cast(sa.bindparam("bm25_tiers", type_=texts), tsqueries)
    tier = sa.func.unnest(tiers).table_valued("q").render_derived(name="tier")
    conditions: list[ColumnElement[bool]] = [table.c.tsv.op("@@")(tier.c.q)]
    conditions += [cond for cond in (where, required) if cond is not None]
    # OFFSET 0 keeps the subquery apart, so each tier runs as its own GIN scan in tier order
    # and the LIMIT stops the scans once enough rows came.
    found = (
        sa.select(table.c.chunk_id, table.c.tsv, table.c.dl)
        .where(*conditions)
        .offset(0)
        .lateral("found")
    )
    first = (
        sa.select(found.c.chunk_id, found.c.tsv, found.c.dl)
        .select_from(tier.join(found, sa.true()))
        .limit(sa.bindparam("bm25_candidates", type_=sa.Integer))
        .subquery("first")
    )
    # A row in several tiers (it holds a larger subset too) is scored once.
    seen = sa.func.row_number().over(partition_by=first.c.chunk_id).label("seen")
    numbered = sa.select(first.c.chunk_id, first.c.tsv, first.c.dl, seen).subquery("numbered")
    candidate = (
        sa.select(numbered.c.chunk_id, numbered.c.tsv, numbered.c.dl)
        .where(numbered.c.seen == 1)
        .subquery("candidate")
    )

    avgdl = sa.func.coalesce(
        sa.bindparam("bm25_avgdl", type_=sa.Float),
        sa.select(sa.func.avg(table.c.dl)).select_from(table).scalar_subquery(),
    )
    # ts_filter(setweight(...)) keeps just the query's lexemes of the row, with positions.
    own = sa.func.unnest(
        sa.func.ts_filter(
            sa.func.setweight(candidate.c.tsv, sa.literal_column("'A'"), lexemes),
            sa.literal_column("'{a}'"),
        )
    ).table_valued("lexeme", "positions", "weights")
    tf = sa.cast(sa.func.cardinality(own.c.positions), sa.Float)
    norm = BM25_K1 * (1.0 - BM25_B + BM25_B * candidate.c.dl / avgdl)
    score = (
        sa.select(sa.func.sum(idf.c.weight * tf * (BM25_K1 + 1.0) / (tf + norm)))
        .select_from(own.join(idf, idf.c.lexeme == own.c.lexeme))
        .scalar_subquery()
    )
    scored = sa.select(candidate.c.chunk_id, score.label("text_score")).subquery("scored")
    return sa.select(scored.c.chunk_id, scored.c.text_score).order_by(
        scored.c.text_score.desc(), scored.c.chunk_id
    )


def no_matches(c: Collection) -> sa.Select[Any]:
    """The empty ``chunk_id, text_score`` list: a query of only stop words matches nothing."""
    table = c.table
    return sa.select(table.c.chunk_id, sa.literal(0.0, sa.Float).label("text_score")).where(
        sa.false()
    )
