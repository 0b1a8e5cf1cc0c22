"""Keyword and hybrid search on real text (GCIDE), against exact BM25 on the same tokens.

    python -m benchmarks.keyword                      # 25k and 50k entries
    python -m benchmarks.keyword --sizes 25000 50000 100000 200000 --gcide /usr/share/dictd

Writes ``docs/results/keyword.md`` (or ``$BENCHMARK_RESULTS_DIR``): p50/p95 of
``text_search``, ``hybrid_search`` and HNSW vector search per corpus size, ingest chunks/s,
the HNSW build time, and how many of the keyword leg's top 10 are the top 10 of exact BM25
(k1=1.5, b=0.75, via ``bm25s``) over the same PostgreSQL lexemes.
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
import sqlalchemy as sa

from benchmarks import gcide
from rag_pgstore import Chunk, ChunkStore
from rag_pgstore.pipeline import hash_embedding

DIM = 64  # the hash embedding: the vector leg is not what is measured here
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


def load(store: ChunkStore, rows: list[tuple[str, str]]) -> float:
    chunks = [
        Chunk(
            chunk_id=f"g{i}",
            entity_id=headword,
            content=text,
            embedding=hash_embedding(text, DIM),
        )
        for i, (headword, text) in enumerate(rows)
    ]
    started = time.perf_counter()
    store.upsert(chunks)
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


def bm25_overlap(store: ChunkStore) -> float:
    """Mean overlap of ``text_search``'s top 10 with exact BM25's top 10 over all rows."""
    import bm25s

    ids, corpus = lexemes(store)
    retriever = bm25s.BM25(k1=1.5, b=0.75)
    vocabulary = {term: n for n, term in enumerate(sorted({t for doc in corpus for t in doc}))}
    retriever.index(
        bm25s.tokenization.Tokenized(
            ids=[[vocabulary[t] for t in doc] for doc in corpus], vocab=vocabulary
        ),
        show_progress=False,
    )
    overlaps = []
    for question in QUESTIONS:
        terms = [t for t in query_lexemes(store, question) if t in vocabulary]
        if not terms:
            continue
        query = bm25s.tokenization.Tokenized(ids=[[vocabulary[t] for t in terms]], vocab=vocabulary)
        found, scores = retriever.retrieve(query, k=min(10, len(ids)), show_progress=False)
        exact = {ids[i] for i, s in zip(found[0], scores[0], strict=True) if s > 0}
        ours = {h.chunk.chunk_id for h in store.text_search(question, k=10)}
        if exact:
            overlaps.append(len(exact & ours) / len(exact))
    return statistics.mean(overlaps)


def run_size(url: str | None, rows: list[tuple[str, str]]) -> dict[str, Any]:
    store = ChunkStore.from_url(url, collection=f"gcide_{len(rows)}", dim=DIM)
    store.drop()
    store.setup()
    result: dict[str, Any] = {"rows": len(rows), "ingest": load(store, rows)}
    result["text"] = timed(lambda q: store.text_search(q, k=10))
    result["hybrid"] = timed(lambda q: store.hybrid_search(hash_embedding(q, DIM), q, k=10))
    started = time.perf_counter()
    store.create_index()
    result["hnsw_build_s"] = time.perf_counter() - started
    result["vector"] = timed(lambda q: store.search(hash_embedding(q, DIM), k=10))
    result["bm25_overlap"] = bm25_overlap(store)
    store.drop()
    store.close()
    return result


def page(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Keyword and hybrid search on real text (GCIDE)",
        "",
        f"Produced by `{command}` on this machine (2 cores, embedded PostgreSQL + pgvector).",
        "20 natural-language questions, 3 passes; the vector leg is a 64-d hash embedding.",
        "`BM25 overlap`: share of exact BM25's top 10 (k1=1.5, b=0.75, `bm25s`, on the same",
        "PostgreSQL lexemes, over all rows) that `text_search` returns in its top 10.",
        "",
        "| entries | ingest chunks/s | text_search p50 / p95 ms | hybrid_search p50 / p95 ms "
        "| HNSW search p50 / p95 ms | HNSW build s | BM25 overlap |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['ingest']:,.0f} | {r['text'][0]:.1f} / {r['text'][1]:.1f} | "
            f"{r['hybrid'][0]:.1f} / {r['hybrid'][1]:.1f} | {r['vector'][0]:.1f} / "
            f"{r['vector'][1]:.1f} | {r['hnsw_build_s']:.1f} | {r['bm25_overlap']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000])
    parser.add_argument("--gcide", type=Path, default=gcide.DEFAULT_DIR)
    args = parser.parse_args()
    directory = gcide.ensure(args.gcide)
    everything = list(gcide.entries(directory, limit=max(args.sizes)))
    url = os.environ.get("DATABASE_URL")
    results = []
    for size in args.sizes:
        results.append(run_size(url, everything[:size]))
        print(results[-1], flush=True)
    out = Path(os.environ.get("BENCHMARK_RESULTS_DIR", Path(__file__).parent.parent / "docs"))
    target = out / "results" / "keyword.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page(results, "python -m benchmarks.keyword " + " ".join(sys.argv[1:])))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
