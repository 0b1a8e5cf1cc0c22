"""The keyword leg of ``text_search`` and ``hybrid_search``, as a plan.

It asks the database for the query's lexemes and the collection's keyword mode in one small
statement, refreshes what it knows of the collection's ANALYZE statistics when ANALYZE has run
since, and returns the ``chunk_id, text_score`` statement of the mode: BM25 over bounded
candidates (``sql/bm25.py``) or ``ts_rank`` over every match (``sql/hybrid.py``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.sql.elements import ColumnElement

from rag_pgstore.driver.steps import Fetch, Plan
from rag_pgstore.errors import SchemaError, UnsupportedError
from rag_pgstore.schema import Collection
from rag_pgstore.sql import bm25
from rag_pgstore.sql import hybrid as hy
from rag_pgstore.types import KeywordSearch, TextMode

__all__ = ["MAX_TS_RANK_TERMS", "keyword_matches"]

MAX_TS_RANK_TERMS = 256


def keyword_matches(
    c: Collection,
    text: str,
    *,
    mode: TextMode,
    where: ColumnElement[bool] | None,
    candidates: int,
    settings: dict[str, str] | None = None,
) -> Plan[tuple[sa.Select[Any], dict[str, Any]]]:
    """The collection's keyword matches for ``text``: ``chunk_id, text_score``, best first,
    and the values of the statement's parameters (for the ``Fetch`` of whatever uses it).

    ``settings`` are ``SET LOCAL`` on the way, for the statement that uses the matches.
    """
    [row] = yield Fetch(bm25.probe(c, text, settings))
    probe = row._mapping
    if c.keyword is not None:
        keyword = c.keyword
    elif probe["registered"]:
        keyword = KeywordSearch(probe["keyword"] or KeywordSearch.TS_RANK.value)
    else:
        raise SchemaError(f"expected collection {c.name!r} to exist, found none; run setup() first")
    if keyword is KeywordSearch.OFF:
        raise UnsupportedError(
            f"collection {c.name!r} has keyword search off; switch it on with "
            "set_keyword_search('bm25'), or use search()"
        )
    lexemes = probe["lexemes"] or []
    if keyword is KeywordSearch.TS_RANK:
        if mode is TextMode.WEBSEARCH:
            tsquery = hy.text_query(c, text, mode)
        elif lexemes:
            # Distinct lexemes, bounded: an OR of thousands would overflow ts_rank's stack.
            quoted = [bm25.tsquery_literal(t) for t in lexemes[:MAX_TS_RANK_TERMS]]
            tsquery = hy.any_lexeme(quoted)
        else:
            return bm25.no_matches(c), {}
        return hy.text_matches(c, tsquery, where if where is not None else sa.true()), {}
    if not lexemes:
        return bm25.no_matches(c), {}
    analyzed_at = probe["analyzed_at"]
    stats = bm25.NO_STATS
    if analyzed_at is not None:
        cached = c.term_stats.get("stats")
        if cached is None or cached.analyzed_at != analyzed_at:
            [found] = yield Fetch(bm25.stats_select(c))
            cached = bm25.term_stats(found._mapping, analyzed_at)
            c.term_stats["stats"] = cached
        stats = cached
    reltuples = probe["reltuples"]
    rows = float(reltuples) if analyzed_at is not None and reltuples and reltuples > 0 else None
    query = bm25.plan_query(lexemes, rows=rows, stats=stats, candidates=candidates)
    required = None
    if mode is TextMode.WEBSEARCH:
        # Quoted phrases, "or" and -exclusions hold as conditions; BM25 ranks what passes.
        config = sa.cast(sa.literal(c.text_config), pg.REGCONFIG)
        required = c.table.c.tsv.op("@@")(sa.func.websearch_to_tsquery(config, text))
    return bm25.matches(c, query, where, required)
