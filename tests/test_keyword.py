"""Keyword search modes: BM25 against a reference on the same lexemes, ts_rank, off, switching
between them, and the inputs that must not break them."""

from __future__ import annotations

import math
import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from rag_pgstore import (
    Chunk,
    ChunkStore,
    InvalidInputError,
    KeywordSearch,
    SchemaError,
    UnsupportedError,
)
from rag_pgstore.pipeline import hash_embedding
from rag_pgstore.sql import bm25
from rag_pgstore.types import BM25_B, BM25_K1
from tests.conftest import Api, StoreFactory

TEXTS = [
    "A small boat used for fishing on the lake.",
    "The fishing boat returned with fish, more fish, and still more fish.",
    "A boat is a vessel; a ship is a large boat.",
    "Honey is a sweet liquid made by bees from the nectar of flowers.",
    "Bees make honey and wax in the hive.",
    "The lute is a stringed instrument played with the fingers.",
    "A violin is a stringed instrument played with a bow made of wood and horsehair.",
    "Yew wood was used for making bows, the weapon of the English archer.",
    "A sonnet is a poem of fourteen lines.",
    "The anchor is kept at the bow of the ship, ready to drop.",
    "Astronomy is the study of the stars, the planets and the sky.",
    "A granary is a building where grain is stored after the harvest.",
]
DIM = 8


def chunks(texts: list[str] = TEXTS, **metadata: object) -> list[Chunk]:
    return [
        Chunk(
            chunk_id=f"d{i}",
            content=t,
            embedding=hash_embedding(t, DIM),
            metadata={"n": i, **metadata},
        )
        for i, t in enumerate(texts)
    ]


def reference_bm25(store: ChunkStore, question: str) -> dict[str, float]:
    """BM25 written out in Python over the lexemes PostgreSQL made of every row."""
    table = store.collection.table
    assert store.engine is not None
    config = sa.cast(sa.literal("english"), sa.dialects.postgresql.REGCONFIG)
    with store.engine.connect() as conn:
        word = sa.func.unnest(table.c.tsv).table_valued("lexeme", "positions").render_derived()
        docs: dict[str, Counter[str]] = {}
        for chunk_id, lexeme, positions in conn.execute(
            sa.select(table.c.chunk_id, word.c.lexeme, word.c.positions).select_from(
                table.join(word, sa.true())
            )
        ):
            docs.setdefault(chunk_id, Counter())[lexeme] += len(positions)
        terms = conn.execute(
            sa.select(sa.func.tsvector_to_array(sa.func.to_tsvector(config, question)))
        ).scalar_one()
    n = len(docs)
    avgdl = sum(sum(d.values()) for d in docs.values()) / n
    scores = {}
    for chunk_id, tf in docs.items():
        dl = sum(tf.values())
        total = 0.0
        for term in terms:
            if tf[term]:
                df = sum(1 for d in docs.values() if d[term])
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                f = tf[term]
                total += (
                    idf * f * (BM25_K1 + 1) / (f + BM25_K1 * (1 - BM25_B + BM25_B * dl / avgdl))
                )
        if total > 0:
            scores[chunk_id] = total
    return scores


QUESTIONS = ["fishing boat", "stringed instrument played with a bow", "sweet honey bees", "wood"]


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
async def test_bm25_scores_are_the_reference(
    make_store: StoreFactory, api: Api, analyzed: bool
) -> None:
    store = make_store(dim=DIM)  # a new collection: BM25 by default
    await api(store, "upsert", chunks())
    if analyzed:
        await api(store, "analyze")
    for question in QUESTIONS:
        want = reference_bm25(store, question)
        hits = await api(store, "text_search", question, k=len(TEXTS))
        assert {h.chunk.chunk_id for h in hits} == set(want)
        for hit in hits:
            # Exact before ANALYZE; from pg_stats after it, which on a table this small saw
            # every row (the ANALYZE sample is the table).
            assert hit.score == pytest.approx(want[hit.chunk.chunk_id], rel=1e-3)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)


def test_bm25_agrees_with_bm25s(make_store: StoreFactory) -> None:
    bm25s = pytest.importorskip("bm25s")
    store = make_store(dim=DIM)
    store.upsert(chunks())
    store.analyze()
    table = store.collection.table
    assert store.engine is not None
    with store.engine.connect() as conn:
        word = sa.func.unnest(table.c.tsv).table_valued("lexeme", "positions").render_derived()
        rows = conn.execute(
            sa.select(table.c.chunk_id, word.c.lexeme, word.c.positions).select_from(
                table.join(word, sa.true())
            )
        ).all()
    docs: dict[str, list[str]] = {}
    for chunk_id, lexeme, positions in rows:
        docs.setdefault(chunk_id, []).extend([lexeme] * len(positions))
    ids = sorted(docs)
    vocabulary = {t: i for i, t in enumerate(sorted({t for d in docs.values() for t in d}))}
    retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    retriever.index(
        bm25s.tokenization.Tokenized(
            ids=[[vocabulary[t] for t in docs[i]] for i in ids], vocab=vocabulary
        ),
        show_progress=False,
    )
    position = {chunk_id: n for n, chunk_id in enumerate(ids)}
    for question in QUESTIONS:
        terms = [vocabulary[t] for t in _lexemes(store, question) if t in vocabulary]
        scores = retriever.get_scores(terms)
        third = sorted(scores)[-3]
        got = [h.chunk.chunk_id for h in store.text_search(question, k=3)]
        # Same top 3, up to ties at the cut.
        assert all(scores[position[i]] >= third - 1e-6 for i in got), question


def _lexemes(store: ChunkStore, text: str) -> list[str]:
    assert store.engine is not None
    config = sa.cast(sa.literal("english"), sa.dialects.postgresql.REGCONFIG)
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(sa.func.tsvector_to_array(sa.func.to_tsvector(config, text)))
            ).scalar_one()
        )


async def test_filters_apply_to_the_keyword_leg(make_store: StoreFactory, api: Api) -> None:
    store = make_store(dim=DIM)
    await api(store, "upsert", chunks())
    hits = await api(store, "text_search", "boat", k=10, filter={"n": {"$gte": 2}})
    assert [h.chunk.chunk_id for h in hits] == ["d2"]
    fused = await api(
        store, "hybrid_search", hash_embedding("boat", DIM), "boat", k=5, filter={"n": 2}
    )
    assert [h.chunk.chunk_id for h in fused] == ["d2"]


async def test_websearch_syntax_holds_under_bm25(make_store: StoreFactory, api: Api) -> None:
    store = make_store(dim=DIM)
    await api(store, "upsert", chunks())
    hits = await api(store, "text_search", '"stringed instrument" -violin', k=5, mode="websearch")
    assert [h.chunk.chunk_id for h in hits] == ["d5"]


def test_modes_shape_the_table(make_store: StoreFactory) -> None:
    columns = {}
    for mode in KeywordSearch:
        store = make_store(dim=DIM, keyword=mode)
        store.upsert(chunks())
        assert store.engine is not None
        with store.engine.connect() as conn:
            columns[mode] = set(
                conn.execute(
                    sa.text(
                        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:t) "
                        "AND attnum > 0 AND NOT attisdropped"
                    ),
                    {"t": store.collection.name},
                ).scalars()
            )
    assert {"tsv", "dl"} <= columns[KeywordSearch.BM25]
    assert "tsv" in columns[KeywordSearch.TS_RANK] and "dl" not in columns[KeywordSearch.TS_RANK]
    assert not {"tsv", "dl"} & columns[KeywordSearch.OFF]


async def test_keyword_off_refuses_keyword_search(make_store: StoreFactory, api: Api) -> None:
    store = make_store(dim=DIM, keyword="off")
    await api(store, "upsert", chunks())
    with pytest.raises(UnsupportedError, match="keyword search off"):
        await api(store, "text_search", "boat")
    with pytest.raises(UnsupportedError, match="keyword search off"):
        await api(store, "hybrid_search", hash_embedding("boat", DIM), "boat")
    assert len(await api(store, "search", hash_embedding("boat", DIM), k=3)) == 3


def test_an_old_collection_keeps_ts_rank(make_store: StoreFactory) -> None:
    old = make_store(dim=DIM, keyword="ts_rank")
    old.upsert(chunks())
    registry = old.collection.registry
    assert old.engine is not None
    with old.engine.begin() as conn:  # what a collection made before keyword modes looks like
        conn.execute(
            sa.update(registry).where(registry.c.name == old.collection.name).values(keyword=None)
        )
    reopened = make_store(dim=DIM, name=old.collection.name)  # no keyword= given
    ranked = reopened.text_search("fishing boat", k=3)
    assert [h.chunk.chunk_id for h in ranked] == [
        h.chunk.chunk_id for h in old.text_search("fishing boat", k=3)
    ]
    assert ranked[0].score < 1  # ts_rank's scale, not BM25's
    with pytest.raises(SchemaError, match="keyword='ts_rank'"):
        make_store(dim=DIM, name=old.collection.name, keyword="bm25")


def test_switching_modes_keeps_every_row(make_store: StoreFactory) -> None:
    store = make_store(dim=DIM, keyword="ts_rank")
    store.upsert(chunks())
    want = reference_bm25(store, "fishing boat")
    assert store.set_keyword_search("bm25") is True
    assert store.set_keyword_search("bm25") is False
    hits = store.text_search("fishing boat", k=10)
    assert {h.chunk.chunk_id: pytest.approx(h.score, rel=1e-6) for h in hits} == want
    assert store.set_keyword_search("off") is True
    with pytest.raises(UnsupportedError):
        store.text_search("boat")
    assert store.set_keyword_search("ts_rank") is True
    assert store.text_search("boat", k=1)
    assert store.count() == len(TEXTS)
    with pytest.raises(InvalidInputError, match="keyword"):
        store.set_keyword_search("elastic")


def test_switching_waits_for_writers_and_loses_nothing(make_store: StoreFactory) -> None:
    store = make_store(dim=DIM, keyword="ts_rank")
    store.upsert(chunks())
    extra = [
        Chunk(chunk_id=f"w{i}", content=f"boat number {i}", embedding=hash_embedding(str(i), DIM))
        for i in range(200)
    ]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for start in range(0, len(extra), 20):
                store.upsert(extra[start : start + 20])
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    store.set_keyword_search("bm25")
    writer.join()
    assert not errors
    assert store.count() == len(TEXTS) + len(extra)
    assert store.engine is not None
    with store.engine.connect() as conn:
        missing = conn.execute(
            sa.select(sa.func.count())
            .select_from(store.collection.table)
            .where(store.collection.table.c.dl.is_(None) | store.collection.table.c.tsv.is_(None))
        ).scalar_one()
    assert missing == 0
    assert len(store.text_search("boat number", k=300)) == len(extra) + 3


@pytest.mark.parametrize(
    "question",
    [
        "",
        "the and of a",
        "a & b | !c :* () <-> 'quote' \\ back",
        "word " * 20_000,
        " ".join(f"w{i}x" for i in range(5_000)),
    ],
    ids=["empty", "stop-words", "tsquery-syntax", "100kB-repeated", "5k-distinct-words"],
)
@pytest.mark.parametrize("mode", ["bm25", "ts_rank"])
async def test_hostile_query_text(
    make_store: StoreFactory, api: Api, question: str, mode: str
) -> None:
    store = make_store(dim=DIM, keyword=mode)
    await api(store, "upsert", chunks())
    hits = await api(store, "text_search", question, k=3)
    assert isinstance(hits, list)
    fused = await api(store, "hybrid_search", hash_embedding("x", DIM), question, k=3)
    assert len(fused) == 3  # the vector leg still answers
    with pytest.raises(InvalidInputError, match="NUL"):
        await api(store, "text_search", "boat\x00")


async def test_lexemes_with_quotes_and_backslashes(make_store: StoreFactory, api: Api) -> None:
    store = make_store(dim=DIM, text_config="simple")
    texts = ["o'brien's back\\slash", "plain words here"]
    await api(store, "upsert", chunks(texts))
    hits = await api(store, "text_search", "o'brien's back\\slash", k=2)
    assert [h.chunk.chunk_id for h in hits] == ["d0"]


async def test_too_long_for_a_tsvector(make_store: StoreFactory, api: Api) -> None:
    store = make_store(dim=DIM)
    await api(store, "upsert", chunks())
    huge = Chunk(chunk_id="huge", content="x" * (1 << 20), embedding=hash_embedding("x", DIM))
    with pytest.raises(InvalidInputError, match=r"'huge'.*smaller chunks"):
        await api(store, "upsert", [chunks(["new one"])[0], huge])
    # Under the byte limit, but distinct words analyse into a tsvector over 1 MiB.
    words = " ".join("".join(chr(97 + (n // 26**p) % 26) for p in range(8)) for n in range(90_000))
    dense = Chunk(chunk_id="dense", content=words, embedding=hash_embedding("d", DIM))
    with pytest.raises(InvalidInputError, match="too long for keyword search"):
        await api(store, "upsert", [dense])
    assert await api(store, "count") == len(TEXTS)


def test_plan_tiers_start_from_the_rarest_lexemes() -> None:
    stats = bm25.TermStats(
        analyzed_at=None, frequency={"common": 0.5, "middle": 0.05}, floor=0.001, avgdl=10.0
    )
    query = bm25.plan_query(["common", "middle", "rare"], rows=1000.0, stats=stats, candidates=50)
    assert query.lexemes == ("rare", "middle", "common")
    assert query.df == (None, 50.0, 500.0)  # "rare" is counted by the query itself
    # "common" is in half the rows, more than the budget: scored, but no tier reads it.
    assert query.tiers == ("'rare' & 'middle'", "'rare'", "'middle'", "'common'")
    roomy = bm25.plan_query(["common", "middle", "rare"], rows=1000.0, stats=stats, candidates=600)
    assert roomy.tiers[0] == "'rare' & 'middle' & 'common'" and len(roomy.tiers) == 7
    only_common = bm25.plan_query(["common"], rows=1000.0, stats=stats, candidates=50)
    assert only_common.tiers == ("'common'",)
    long = bm25.plan_query([f"t{i}" for i in range(100)], rows=None, stats=stats, candidates=5)
    assert len(long.lexemes) == bm25.MAX_TERMS
    assert len(long.tiers) == 2**bm25.TIER_TERMS  # every subset of 6, then the other 26
    assert long.tiers[-1].count(" | ") == bm25.MAX_TERMS - bm25.TIER_TERMS - 1
    assert long.rows is None and long.avgdl is None


def test_a_store_sees_a_switch_made_elsewhere(make_store: StoreFactory) -> None:
    pinned = make_store(dim=DIM, keyword="bm25")
    pinned.upsert(chunks())
    other = make_store(dim=DIM, name=pinned.collection.name)
    assert other.set_keyword_search("ts_rank") is True
    with pytest.raises(SchemaError, match="keyword='ts_rank' now"):
        pinned.text_search("boat")
    assert other.text_search("boat", k=1)  # opened without keyword=: follows the registry


def test_a_mode_from_a_newer_version_is_a_schema_error(make_store: StoreFactory) -> None:
    store = make_store(dim=DIM)
    registry = store.collection.registry
    assert store.engine is not None
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(registry)
            .where(registry.c.name == store.collection.name)
            .values(keyword="splade")
        )
    with pytest.raises(SchemaError, match="newer rag_pgstore"):
        store.text_search("boat")
    with pytest.raises(SchemaError, match="newer rag_pgstore"):
        store.describe()


def test_query_text_longer_than_any_question_is_refused(make_store: StoreFactory) -> None:
    store = make_store(dim=DIM)
    with pytest.raises(InvalidInputError, match="at most 262,144 characters"):
        store.text_search("w " * 200_000)


async def test_a_long_query_finds_rows_with_only_its_later_words(
    make_store: StoreFactory, api: Api
) -> None:
    store = make_store(dim=DIM)  # never analysed: tiers come from the first lexemes
    await api(store, "upsert", chunks())
    question = "archer astronomy bees boat fourteen granary harvest violin"
    want = reference_bm25(store, question)
    hits = await api(store, "text_search", question, k=len(TEXTS))
    assert {h.chunk.chunk_id for h in hits} == set(want)
