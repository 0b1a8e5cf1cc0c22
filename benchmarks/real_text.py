"""The real model on real text: all-MiniLM-L6-v2 over the Python Language Reference.

Embedding throughput, then search latency (raw SQL vs ChunkStore.search) and HNSW recall@10
on real vectors, and the retrieval quality of vector, full-text and hybrid search.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import retrieval
from benchmarks.rawsql import RAW, raw_sql
from benchmarks.timing import latencies, recall
from rag_pgstore import Chunk, ChunkStore, HnswIndex, SearchTuning


def run(url: str | None, count: int) -> dict[str, Any]:
    embed = retrieval.local_model_embed()
    chunks = retrieval.load_chunks()
    texts = [text for _, _, text in chunks]
    embed(texts[:8])  # load the model before the clock
    started = time.perf_counter()
    vectors = embed(texts)
    embed_seconds = time.perf_counter() - started
    store = ChunkStore.from_url(url, collection="bench_real", dim=384, setup=False)
    store.drop()
    store.setup()
    store.upsert(
        Chunk(chunk_id=cid, entity_id=topic, content=text, embedding=v, metadata={"topic": topic})
        for (cid, topic, text), v in zip(chunks, vectors, strict=True)
    )
    questions = embed([q.text for q in retrieval.QUERIES])
    asked = [questions[i % len(questions)] for i in range(count)]
    conn, raw = raw_sql(store)
    searches: dict[str, Callable[[int], object]] = {
        RAW: lambda i: conn.execute(raw, {"q": np.asarray(asked[i], dtype=np.float32)}).fetchall(),
        "ChunkStore.search": lambda i: store.search(asked[i], k=10),
    }
    exact = latencies(searches, count)
    truth = [[h.chunk.chunk_id for h in store.search(q, k=10)] for q in questions]
    store.create_index(HnswIndex())
    indexed = latencies(searches, count)
    found = [
        [h.chunk.chunk_id for h in store.search(q, k=10, tuning=SearchTuning(exact=False))]
        for q in questions
    ]
    quality = retrieval.evaluate(chunks, embed, retrieval.standard_searches(store))
    conn.close()
    store.drop()
    store.close()
    return {
        "chunks": len(chunks),
        "embed_per_s": len(chunks) / embed_seconds,
        "exact": exact,
        "hnsw": indexed,
        "recall": recall(found, truth),
        "quality": quality,
    }
