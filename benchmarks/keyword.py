"""Keyword and hybrid search on real text (GCIDE), each keyword mode side by side.

    python -m benchmarks.keyword                      # 25k and 50k entries
    python -m benchmarks.keyword --sizes 25000 50000 100000 200000 --gcide /usr/share/dictd

Without ``$DATABASE_URL`` it runs on an embedded server of its own with ``shared_buffers`` at a
quarter of the machine's memory (``--shared-buffers``; ``benchmarks/server.py`` says why), and
times the largest size's searches again at the embedded server's out-of-the-box 128 MB.
Writes ``docs/results/keyword.md`` (or ``$BENCHMARK_RESULTS_DIR``). Per corpus size and
keyword mode (``bm25``, ``ts_rank``, ``off``): ingest chunks/s against a raw binary COPY into
the same table, p50/p95 of ``text_search`` and ``hybrid_search``, the same BM25 ranked
exhaustively (every match, in SQL), HNSW vector search, index build time and size, and the
keyword leg's recall@10 against exact BM25 over all rows (``bm25s``, k1=1.2, b=0.75, on the
same PostgreSQL lexemes; a returned row counts when its exact score reaches the 10th best,
so ties at the cut do not count against either side).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks import gcide
from benchmarks import server as bench_server
from benchmarks.ingest import dsn
from rag_pgstore import Chunk, ChunkStore, KeywordSearch
from rag_pgstore.codec import content_hash
from rag_pgstore.pipeline import hash_embedding
from rag_pgstore.sql import bm25
from rag_pgstore.types import BM25_B, BM25_K1

DIM = 64  # the hash embedding: the vector leg is not what is measured here
INGEST_TRIALS = 2
QUESTIONS = [
    "a small boat used for fishing",
    "the bright star seen in the morning sky",
    "a disease of the lungs that causes coughing",
    "an instrument for measuring the weight of the air",
    "the act of giving up a throne",
    "a tree whose wood is used for making bows",
    "money paid to a soldier",
    "a tool for cutting grass",
    "the study of the stars and planets",
    "a building where grain is stored",
    "a person who makes barrels",
    "the sound a horse makes",
    "a sweet liquid made by bees",
    "the part of a ship where the anchor is kept",
    "a poem of fourteen lines",
    "a fever that comes and goes",
    "a fish with a long snout like a sword",
    "the right of a king to rule",
    "a musical instrument with strings played with a bow",
    "the science of the laws of motion",
]


# The query vectors are made before anything is timed: the searches are measured, not the
# embedding of the questions.
VECTORS = {question: hash_embedding(question, DIM) for question in QUESTIONS}


def settle(store: ChunkStore) -> None:
    """VACUUM the freshly loaded table and CHECKPOINT, so that the searches are timed on a
    table in its steady state, not beside the autovacuum and the writes of its load."""
    with psycopg.connect(dsn(store), autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(store.collection.name)))
        conn.execute("CHECKPOINT")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def timed(run: Any, repeats: int = 3) -> tuple[float, float]:
    """p50 and p95 in ms of ``run(question)`` over the questions, after one warm-up pass."""
    for question in QUESTIONS[:5]:
        run(question)
    times = []
    for _ in range(repeats):
        for question in QUESTIONS:
            started = time.perf_counter()
            run(question)
            times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times), percentile(times, 95)


def timed_together(runs: dict[Any, Any], repeats: int = 3) -> dict[Any, tuple[float, float]]:
    """:func:`timed` for each of ``runs``, pass by pass in turn: the machine's drift over a
    long run (10-20% here) falls on every run alike, so their ratios hold."""
    for run in runs.values():
        for question in QUESTIONS[:5]:
            run(question)
    times: dict[Any, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            for question in QUESTIONS:
                started = time.perf_counter()
                run(question)
                times[key].append(1000 * (time.perf_counter() - started))
    return {key: (statistics.median(t), percentile(t, 95)) for key, t in times.items()}


def chunks_of(rows: list[tuple[str, str]]) -> list[Chunk]:
    return [
        Chunk(
            chunk_id=f"g{i}", entity_id=headword, content=text, embedding=hash_embedding(text, DIM)
        )
        for i, (headword, text) in enumerate(rows)
    ]


def load(store: ChunkStore, chunks: list[Chunk]) -> float:
    """Chunks/s of ``store.upsert`` into the fresh collection."""
    store.drop()
    store.setup()
    started = time.perf_counter()
    store.upsert(chunks)
    return len(chunks) / (time.perf_counter() - started)


def raw_copy(store: ChunkStore, chunks: list[Chunk]) -> float:
    """Chunks/s of a hand-written binary COPY of the same columns into the same fresh table."""
    store.drop()
    store.setup()
    columns = ["chunk_id", "entity_id", "content", "metadata", "embedding", "content_hash"]
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(store.collection.name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with psycopg.connect(dsn(store)) as conn:
        register_vector(conn)
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(["text", "text", "text", "jsonb", "vector", "text"])
            for chunk in chunks:
                # The same input upsert gets (lists of floats), so the floor converts them too.
                copy.write_row(
                    [
                        chunk.chunk_id,
                        chunk.entity_id,
                        chunk.content,
                        Jsonb(dict(chunk.metadata)),
                        np.asarray(chunk.embedding, dtype=np.float32),
                        content_hash(chunk.content),
                    ]
                )
        conn.commit()
        return len(chunks) / (time.perf_counter() - started)


def lexemes(store: ChunkStore) -> tuple[list[str], list[list[str]]]:
    """Every chunk's lexemes (repeated by their frequency), as PostgreSQL's analyser made them."""
    table = store.collection.table
    word = sa.func.unnest(table.c.tsv).table_valued("lexeme", "positions").render_derived()
    statement = sa.select(
        table.c.chunk_id, word.c.lexeme, sa.func.cardinality(word.c.positions)
    ).select_from(table.join(word, sa.true()))
    docs: dict[str, list[str]] = {}
    assert store.engine is not None
    with store.engine.connect() as conn:
        for chunk_id, lexeme, tf in conn.execute(statement):
            docs.setdefault(chunk_id, []).extend([lexeme] * max(1, tf or 1))
    ids = sorted(docs)
    return ids, [docs[i] for i in ids]


def query_lexemes(store: ChunkStore, text: str) -> list[str]:
    config = sa.cast(sa.literal(store.collection.text_config), sa.dialects.postgresql.REGCONFIG)
    statement = sa.select(
        sa.func.unnest(sa.func.tsvector_to_array(sa.func.to_tsvector(config, text)))
    )
    assert store.engine is not None
    with store.engine.connect() as conn:
        return list(conn.execute(statement).scalars())


class ExactBm25:
    """BM25 over every row, by ``bm25s`` on the store's own lexemes: the reference."""

    def __init__(self, store: ChunkStore) -> None:
        import bm25s

        self.ids, corpus = lexemes(store)
        self.vocabulary = {t: n for n, t in enumerate(sorted({t for doc in corpus for t in doc}))}
        self.retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B)
        self.retriever.index(
            bm25s.tokenization.Tokenized(
                ids=[[self.vocabulary[t] for t in doc] for doc in corpus], vocab=self.vocabulary
            ),
            show_progress=False,
        )
        self.position = {chunk_id: n for n, chunk_id in enumerate(self.ids)}

    def recall(self, store: ChunkStore, question: str, found: list[str]) -> float | None:
        """Share of ``found`` (a top 10) whose exact score reaches the exact 10th best."""
        terms = [self.vocabulary[t] for t in query_lexemes(store, question) if t in self.vocabulary]
        if not terms:
            return None
        scores = self.retriever.get_scores(terms)
        k = min(10, int((scores > 0).sum()))
        if k == 0:
            return None
        cut = float(np.sort(scores)[-k])
        hits = [bool(scores[self.position[c]] >= cut * (1 - 1e-5)) for c in found]
        return sum(hits) / k


def exhaustive(store: ChunkStore, question: str) -> list[str]:
    """The same BM25 in SQL, ranking every row that matches any query lexeme: no tiers."""
    c = store.collection
    terms = query_lexemes(store, question)
    if not terms:
        return []
    assert store.engine is not None
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(c.table)).scalar_one()
        avgdl = conn.execute(sa.select(sa.func.avg(c.table.c.dl))).scalar_one()
        query = bm25.Bm25Query(
            lexemes=tuple(terms),
            df=(None,) * len(terms),
            rows=float(rows),
            avgdl=float(avgdl),
            tiers=(" | ".join(bm25.tsquery_literal(t) for t in terms),),
            candidates=rows,
        )
        statement, params = bm25.matches(c, query, None)
        return [row[0] for row in conn.execute(statement.limit(10), params)]


def sizes(store: ChunkStore) -> dict[str, float]:
    """MB of the table's GIN (tsv) and HNSW indexes."""
    c = store.collection
    assert store.engine is not None
    out = {}
    with store.engine.connect() as conn:
        for name, index in (("gin_mb", c.tsv_index_name), ("hnsw_mb", c.index_name)):
            found = conn.execute(
                sa.select(sa.func.pg_relation_size(sa.func.to_regclass(f"{c.schema}.{index}")))
            ).scalar_one()
            out[name] = (found or 0) / 2**20
    return out


def run_size(
    server: bench_server.BenchServer, rows: list[tuple[str, str]]
) -> tuple[dict[str, Any], ChunkStore]:
    """Every keyword mode at one corpus size, and the BM25 collection, kept for its searches
    to be timed beside the other sizes' (:func:`time_bm25`)."""
    url = server.url
    chunks = chunks_of(rows)
    result: dict[str, Any] = {"rows": len(rows)}
    reference: ExactBm25 | None = None
    for mode in (KeywordSearch.OFF, KeywordSearch.TS_RANK, KeywordSearch.BM25):
        store = ChunkStore.from_url(
            url, collection=f"gcide_{mode.value}_{len(rows)}", dim=DIM, keyword=mode, setup=False
        )
        # Two interleaved trials of each, the faster kept: one load on this 2-core machine
        # varies by 10-20% from run to run.
        trials = [(raw_copy(store, chunks), load(store, chunks)) for _ in range(INGEST_TRIALS)]
        m: dict[str, Any] = {
            "raw_copy": max(t[0] for t in trials),
            "ingest": max(t[1] for t in trials),
        }
        result[mode.value] = m
        if mode is KeywordSearch.OFF:
            store.drop()
            store.close()
            continue
        started = time.perf_counter()
        store.analyze()
        m["analyze_s"] = time.perf_counter() - started
        # Hybrid's vector leg is served by HNSW, as it would be in production.
        started = time.perf_counter()
        store.create_index()
        m["hnsw_build_s"] = time.perf_counter() - started
        settle(store)
        if reference is None:
            reference = ExactBm25(store)
        if mode is KeywordSearch.TS_RANK:
            m["text"] = timed(lambda q, s=store: s.text_search(q, k=10))
            m["hybrid"] = timed(lambda q, s=store: s.hybrid_search(VECTORS[q], q, k=10))
        recalls = [
            reference.recall(store, q, [h.chunk.chunk_id for h in store.text_search(q, k=10)])
            for q in QUESTIONS
        ]
        m["recall"] = statistics.mean(r for r in recalls if r is not None)
        if mode is KeywordSearch.BM25:
            m["exhaustive"] = timed(lambda q, s=store: exhaustive(s, q), repeats=1)
            recalls = [reference.recall(store, q, exhaustive(store, q)) for q in QUESTIONS]
            m["exhaustive_recall"] = statistics.mean(r for r in recalls if r is not None)
        m.update(sizes(store))
        if mode is KeywordSearch.BM25:
            return result, store
        store.drop()
        store.close()
    raise AssertionError("unreachable: BM25 is the last mode")


def searches(store: ChunkStore) -> dict[str, Any]:
    """BM25 text search, hybrid search and HNSW vector search of ``store``, by question."""
    return {
        "text": lambda q: store.text_search(q, k=10),
        "hybrid": lambda q: store.hybrid_search(VECTORS[q], q, k=10),
        "vector": lambda q: store.search(VECTORS[q], k=10),
    }


def time_bm25(results: list[dict[str, Any]], stores: list[ChunkStore]) -> None:
    """Time every size's BM25 searches together (see :func:`timed_together`)."""
    runs = {
        (n, kind): run for n, store in enumerate(stores) for kind, run in searches(store).items()
    }
    for (n, kind), pair in timed_together(runs).items():
        results[n]["bm25"][kind] = pair


def small_buffers(
    server: bench_server.BenchServer, store: ChunkStore, shared_buffers: str
) -> dict[str, Any]:
    """The store's searches timed on the same server restarted with 128 MB of shared
    buffers; the server is then restarted with ``shared_buffers`` again."""
    assert store.engine is not None
    server.resize(bench_server.OUT_OF_THE_BOX)
    store.engine.dispose()  # its connections went with the server
    try:
        return {kind: timed(run) for kind, run in searches(store).items()}
    finally:
        server.resize(shared_buffers)
        store.engine.dispose()


def _ms(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.1f} / {pair[1]:.1f}"


def page(results: list[dict[str, Any]], command: str, shared_buffers: str) -> str:
    lines = [
        "# Keyword and hybrid search on real text (GCIDE)",
        "",
        f"Produced by `{command}` on this machine (2 cores, embedded PostgreSQL 18 + pgvector",
        f"0.8, shared_buffers {shared_buffers}, other settings at their defaults; see",
        "`benchmarks/server.py`). 20 natural-language questions, 3 passes (1 for the",
        "exhaustive ranking); the vector leg is a 64-d hash embedding served by HNSW (built",
        "before the searches are timed; the query vectors are made before timing, and the",
        "table is VACUUMed and CHECKPOINTed after its load). Questions are timed in turn, so",
        "each query finds the caches as the previous question left them; BM25's searches of",
        "every size are timed together, pass by pass, so that drift over the run falls on all",
        "sizes alike and their growth is read from one moment. Recall@10: share of the",
        "top 10 whose exact BM25 score (`bm25s`, k1=1.2, b=0.75, same lexemes, all rows)",
        "reaches the exact 10th best. Statistics were refreshed with `store.analyze()` after",
        "loading (autovacuum does the same within about a minute).",
        "",
        "## Search (p50 / p95 ms) and ranking quality",
        "",
        "| entries | BM25 text_search | BM25 hybrid | BM25 recall@10 | exhaustive BM25 (SQL) "
        "| its recall@10 | ts_rank text_search | ts_rank hybrid | ts_rank recall@10 "
        "| HNSW search |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b, t = r["bm25"], r["ts_rank"]
        lines.append(
            f"| {r['rows']:,} | {_ms(b['text'])} | {_ms(b['hybrid'])} | {b['recall']:.3f} | "
            f"{_ms(b['exhaustive'])} | {b['exhaustive_recall']:.3f} | {_ms(t['text'])} | "
            f"{_ms(t['hybrid'])} | {t['recall']:.3f} | {_ms(b['vector'])} |"
        )
    small = [r for r in results if "out_of_the_box" in r["bm25"]]
    if small:
        lines += [
            "",
            f"### With the embedded server's out-of-the-box {bench_server.OUT_OF_THE_BOX} of "
            "shared buffers",
            "",
            "The same collection, the server restarted with 128 MB of shared buffers (the",
            "searches start on cold buffers). The table and its indexes no longer fit, so most",
            "pages come from the OS page cache: the same plans, slower by the copies.",
            "",
            "| entries | BM25 text_search | BM25 hybrid | HNSW search |",
            "|---|---|---|---|",
        ]
        for r in small:
            o = r["bm25"]["out_of_the_box"]
            lines.append(
                f"| {r['rows']:,} | {_ms(o['text'])} | {_ms(o['hybrid'])} | {_ms(o['vector'])} |"
            )
    lines += [
        "",
        "## Ingest (chunks/s; `upsert` of one list, and a raw binary COPY into the same table)",
        "",
        "Both start from the same chunks, embeddings as lists of floats (what a model returns):",
        "the raw COPY turns each into a float32 array inside its timer, as `upsert` does. Each",
        f"is the faster of {INGEST_TRIALS} interleaved trials.",
        "",
        "| entries | keyword | upsert | raw COPY | ratio | ANALYZE s | GIN MB | HNSW build s "
        "| HNSW MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for mode in ("off", "ts_rank", "bm25"):
            m = r[mode]
            lines.append(
                f"| {r['rows']:,} | {mode} | {m['ingest']:,.0f} | {m['raw_copy']:,.0f} | "
                f"{m['ingest'] / m['raw_copy']:.2f} | {m.get('analyze_s', 0):.1f} | "
                f"{m.get('gin_mb', 0):.0f} | {m.get('hnsw_build_s', 0):.1f} | "
                f"{m.get('hnsw_mb', 0):.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], target: Path) -> None:
    """p50 of each keyword ranking against corpus size (log scale)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    sizes = [r["rows"] for r in results]
    figure, axes = plt.subplots(figsize=(7, 4))
    for label, mode, key in (
        ("BM25 text_search", "bm25", "text"),
        ("BM25 hybrid_search", "bm25", "hybrid"),
        ("exhaustive BM25 (SQL)", "bm25", "exhaustive"),
        ("ts_rank text_search", "ts_rank", "text"),
        ("ts_rank hybrid_search", "ts_rank", "hybrid"),
    ):
        axes.plot(sizes, [r[mode][key][0] for r in results], marker="o", label=label)
    axes.axhline(15, color="grey", linestyle=":", label="15 ms")
    axes.set_xlabel("GCIDE entries")
    axes.set_ylabel("p50 ms (log)")
    axes.set_yscale("log")
    axes.set_title("keyword search latency on real text")
    axes.legend(fontsize=8)
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000])
    parser.add_argument("--gcide", type=Path, default=gcide.DEFAULT_DIR)
    parser.add_argument(
        "--shared-buffers",
        default=bench_server.quarter_of_memory(),
        help="of the benchmark's own embedded server (default: a quarter of the memory)",
    )
    args = parser.parse_args()
    directory = gcide.ensure(args.gcide)
    everything = list(gcide.entries(directory, limit=max(args.sizes)))
    server = bench_server.start(args.shared_buffers)
    shared_buffers = server.shared_buffers()
    results, stores = [], []
    for size in args.sizes:
        result, store = run_size(server, everything[:size])
        results.append(result)
        stores.append(store)
        print(result, flush=True)
    time_bm25(results, stores)
    if server.dedicated is not None:
        largest = max(range(len(results)), key=lambda n: results[n]["rows"])
        results[largest]["bm25"]["out_of_the_box"] = small_buffers(
            server, stores[largest], args.shared_buffers
        )
    for store in stores:
        store.drop()
        store.close()
    print(results, flush=True)
    out = Path(os.environ.get("BENCHMARK_RESULTS_DIR", Path(__file__).parent.parent / "docs"))
    target = out / "results" / "keyword.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = page(results, "python -m benchmarks.keyword " + " ".join(sys.argv[1:]), shared_buffers)
    plot(results, out / "benchmarks" / "keyword.png")
    target.write_text(text + "\n![keyword search latency](../benchmarks/keyword.png)\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
