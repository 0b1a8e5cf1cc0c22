"""The keyword leg of ``text_search`` and ``hybrid_search``, as a plan.

It asks the database for the query's lexemes and the collection's keyword mode in one small
statement, refreshes what it knows of the collection's ANALYZE statistics when ANALYZE has run
since, and returns the ``chunk_id, text_score`` statement of the mode: BM25 over bounded
candidates (``sql/bm25.py``) or ``ts_rank`` over every match (``sql/hybrid.py``).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from rag_pgstore.driver.steps import Fetch, Plan
from rag_pgstore.errors import SchemaError, UnsupportedError
from rag_pgstore.ops.registry import missing
from rag_pgstore.schema import Collection, stored_keyword
from rag_pgstore.sql import bm25
from rag_pgstore.sql import hybrid as hy
from rag_pgstore.types import KeywordSearch, TextMode

__all__ = ["MAX_TS_RANK_TERMS", "STATS_SECONDS", "keyword_matches"]

MAX_TS_RANK_TERMS = 256
STATS_SECONDS = 60.0


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
    probed = bm25.probe(c, text, settings)
    [row] = yield Fetch(probed.statement, probed.params)
    probe = row._mapping
    if not probe["registered"]:
        raise missing(c)
    # The registry, not the store's own keyword=: another process may have switched it.
    keyword = stored_keyword(probe["keyword"])
    if c.keyword is not None and c.keyword is not keyword:
        raise SchemaError(
            f"collection {c.name!r} has keyword={keyword.value!r} now, got keyword="
            f"{c.keyword.value!r}; open it again with keyword={keyword.value!r} (or none)"
        )
    if keyword is KeywordSearch.OFF:
        raise UnsupportedError(
            f"collection {c.name!r} has keyword search off; switch it on with "
            "set_keyword_search('bm25'), or use search()"
        )
    lexemes = probe["lexemes"] or []
    if keyword is KeywordSearch.TS_RANK:
        if mode is TextMode.WEBSEARCH:
            tsquery = hy.websearch_query(c, text)
        elif lexemes:
            # Distinct lexemes, bounded: an OR of thousands would overflow ts_rank's stack.
            quoted = [bm25.tsquery_literal(t) for t in lexemes[:MAX_TS_RANK_TERMS]]
            tsquery = hy.any_lexeme(quoted)
        else:
            return bm25.no_matches(c), {}
        return hy.text_matches(c, tsquery, where if where is not None else sa.true()), {}
    if not lexemes:
        return bm25.no_matches(c), {}
    stats = yield from _statistics(c, probe["analyzed_at"])
    reltuples = probe["reltuples"]
    # pg_stats and reltuples come from ANALYZE (and are replicated to standbys); without
    # them N, df and avgdl are computed exactly by the query.
    known = bool(stats.frequency) and reltuples is not None and reltuples > 0
    rows = float(reltuples) if known else None
    if not known:
        stats = bm25.NO_STATS
    query = bm25.plan_query(lexemes, rows=rows, stats=stats, candidates=candidates)
    required = None
    if mode is TextMode.WEBSEARCH:
        # Quoted phrases, "or" and -exclusions hold as conditions; BM25 ranks what passes.
        required = c.table.c.tsv.op("@@")(hy.websearch_query(c, text))
    return bm25.matches(c, query, where, required)


def _statistics(c: Collection, analyzed_at: datetime | None) -> Plan[bm25.TermStats]:
    """The collection's ANALYZE statistics, read again when ANALYZE ran since the last read,
    or, where the time of the last ANALYZE is unknown (a standby, a server that restarted
    after a crash), once every :data:`STATS_SECONDS`."""
    cached = c.term_stats.get("stats")
    now = time.monotonic()
    if cached is not None:
        stats, read_at = cached
        fresh = stats.analyzed_at == analyzed_at and (
            analyzed_at is not None or now - read_at < STATS_SECONDS
        )
        if fresh:
            return stats  # type: ignore[no-any-return]
    [found] = yield Fetch(bm25.stats_select(c))
    stats = bm25.term_stats(found._mapping, analyzed_at)
    c.term_stats["stats"] = (stats, now)
    return stats
