"""Statement builders compiled with the PostgreSQL dialect, without a database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from rag_pgstore import Distance, HybridOptions
from rag_pgstore.schema import Collection
from rag_pgstore.sql import bm25, catalog
from rag_pgstore.sql import search as st
from rag_pgstore.sql import writes as wr
from rag_pgstore.sql.hybrid import fused_select, text_matches, text_select, websearch_query
from tests.conftest import PG


def sql(statement: sa.ClauseElement) -> str:
    return " ".join(str(statement.compile(dialect=PG)).split())


def test_vector_search_orders_by_the_distance_operator() -> None:
    for distance in Distance:
        c = Collection("docs", 3, distance=distance)
        text = sql(st.vector_search(c, st.query_param(c, [1.0, 2.0, 3.0]), k=5))
        assert f"ORDER BY public.docs.embedding {distance.operator} %(query)s" in text
        # LIMIT is inlined, so a prepared statement's generic plan knows it.
        assert "LIMIT __[POSTCOMPILE_" in text
    exact = sql(st.vector_search(c, st.query_param(c, [1.0, 2.0, 3.0]), k=5, exact=True))
    assert "+ %(" in exact  # an expression no ANN index matches


def test_compiled_reads_inline_limits_and_bind_only_the_query() -> None:
    c = Collection("docs", 3)
    for form in ("ann", "scan", "exact"):
        text, fixed = st.nearest_read(c, 7, 3, form)
        assert "LIMIT 7 OFFSET 3" in text
        assert "%(query)s" in text and "POSTCOMPILE" not in text
        assert "query" not in dict(fixed)
    assert " JOIN " not in st.nearest_read(c, 7, 0, "ann")[0]
    assert " JOIN " in st.nearest_read(c, 7, 0, "scan")[0]
    probe, params = catalog.ann_indexed(c.schema, c.name)
    assert "pg_catalog.pg_indexes" in probe and "AS indexed" in probe
    assert set(params.values()) == {"public", "docs", " USING (hnsw|ivfflat) "}


def test_merge_orders_and_skips_unchanged_rows() -> None:
    c = Collection("docs", 3)
    text = sql(wr.upsert_from_stage(c))
    assert "ON CONFLICT (chunk_id) DO UPDATE" in text
    assert "IS DISTINCT FROM" in text
    assert text.index("ORDER BY rag_pgstore_stage.chunk_id") < text.index("ON CONFLICT")


def test_any_exist_binds_one_array() -> None:
    compiled = wr.any_exist(Collection("docs", 3), ["a", "b'c"]).compile(dialect=PG)
    assert "EXISTS" in str(compiled)
    assert "b'c" not in str(compiled)
    assert list(compiled.params.values()) == [["a", "b'c"]]


def test_copy_statements_quote_identifiers() -> None:
    stage = wr.stage_copy()
    assert "Identifier('rag_pgstore_stage')" in repr(stage)
    table = wr.table_copy(Collection("docs", 3, schema="kb"))
    assert "Identifier('kb', 'docs')" in repr(table)
    for copy in (stage, table):
        assert "FROM STDIN (FORMAT BINARY)" in repr(copy)
        assert "Identifier('content_hash')" in repr(copy)


def test_set_local_binds_names_and_values() -> None:
    compiled = wr.set_local_many({"hnsw.ef_search": "100"}).compile(dialect=PG)
    assert "hnsw" not in str(compiled)
    assert list(compiled.params.values()) == ["hnsw.ef_search", "100", True]


@pytest.mark.parametrize("keyword", ["ts_rank", "bm25"])
def test_hybrid_is_a_single_select_with_both_searches(keyword: str) -> None:
    c = Collection("docs", 3, text_config="simple")
    if keyword == "ts_rank":
        leg = text_matches(c, websearch_query(c, "o'brien"), sa.true())
    else:
        planned = bm25.plan_query(["o'brien"], rows=None, stats=bm25.NO_STATS, candidates=100)
        leg, _ = bm25.matches(c, planned, None)
    text = sql(
        fused_select(
            c, st.query_param(c, [1.0, 0.0, 0.0]), leg, k=5, where=None, options=HybridOptions()
        )
    )
    assert text.startswith("WITH vec AS") or text.startswith("WITH idf AS")
    assert "FULL OUTER JOIN txt" in text
    assert ("ts_rank(public.docs.tsv, tsq.q, " in text) == (keyword == "ts_rank")
    assert ("JOIN LATERAL" in text) == (keyword == "bm25")  # the tiers
    assert "o'brien" not in text  # bound
    assert "ORDER BY fused.score DESC" in text
    only_text = sql(text_select(c, leg, k=3))
    assert "<=>" not in only_text
