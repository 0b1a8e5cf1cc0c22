"""Query latency (raw SQL vs each store), recall@10 under filters, and hybrid latency.

All on one collection loaded with the query corpus; queries are fresh points from the same
clusters. Ground truth is brute force in numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.corpus import Corpus, bucket, queries, stream
from benchmarks.rawsql import RAW, raw_sql
from benchmarks.timing import Latency, latencies, recall
from rag_pgstore import Chunk, ChunkStore, HnswIndex, SearchTuning

__all__ = ["FILTERS", "hybrid_latency", "load", "query_latency", "recalls", "truth"]

K = 10
FILTERS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "10%": {"bucket": {"$lt": 10}},
    "1%": {"bucket": 0},
}


def load(url: str | None, corpus: Corpus) -> ChunkStore:
    store = ChunkStore.from_url(url, collection="bench_query", dim=corpus.dim, setup=False)
    store.drop()
    store.setup()
    ids, texts, metas = corpus.ids(), corpus.texts(), corpus.metadata()
    store.upsert(
        Chunk(chunk_id=ids[i], content=texts[i], embedding=v, metadata=metas[i])
        for start, stop in stream(corpus)
        for i, v in zip(range(start, stop), corpus.vectors(start, stop), strict=True)
    )
    return store


def query_latency(store: ChunkStore, corpus: Corpus, count: int) -> dict[str, Latency]:
    """p50/p95 of a top-10 search by raw SQL and through each of our stores."""
    from llama_index.core.vector_stores.types import VectorStoreQuery

    from rag_pgstore.adapters.langchain import HashEmbeddings, LangChainVectorStore
    from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore

    vectors = queries(corpus, count)
    lists = vectors.tolist()
    conn, raw = raw_sql(store)
    lc = LangChainVectorStore(store, embedding=HashEmbeddings(dim=corpus.dim))
    li = LlamaIndexVectorStore(store)
    searches: dict[str, Callable[[int], object]] = {
        RAW: lambda i: conn.execute(raw, {"q": vectors[i]}).fetchall(),
        "ChunkStore.search": lambda i: store.search(lists[i], k=K),
        "LangChainVectorStore": lambda i: lc.similarity_search_by_vector(lists[i], k=K),
        "LlamaIndexVectorStore": lambda i: li.query(
            VectorStoreQuery(query_embedding=lists[i], similarity_top_k=K)
        ),
    }
    try:
        return latencies(searches, count)
    finally:
        conn.close()


def truth(
    corpus: Corpus, vectors: npt.NDArray[np.float32], keep: npt.NDArray[np.bool_] | None
) -> list[list[str]]:
    """Exact top-10 ids by cosine (the vectors are unit length), among rows ``keep``."""
    ids = np.array(corpus.ids())
    best: list[list[str]] = [[] for _ in vectors]
    scores = np.full((len(vectors), 0), -np.inf)
    names = np.empty((len(vectors), 0), dtype=ids.dtype)
    for start, stop in stream(corpus):
        sims = vectors @ corpus.vectors(start, stop).T
        if keep is not None:
            sims[:, ~keep[start:stop]] = -np.inf
        scores = np.concatenate([scores, sims], axis=1)
        names = np.concatenate([names, np.broadcast_to(ids[start:stop], sims.shape)], axis=1)
        top = np.argsort(-scores, axis=1)[:, :K]
        scores = np.take_along_axis(scores, top, axis=1)
        names = np.take_along_axis(names, top, axis=1)
    for q in range(len(vectors)):
        best[q] = [str(n) for n, s in zip(names[q], scores[q], strict=True) if s > -np.inf]
    return best


TUNINGS: dict[str, SearchTuning | None] = {
    "default (planner picks exact or HNSW)": None,
    "HNSW, no iterative scan": SearchTuning(exact=False, iterative_scan="off"),
    "HNSW, iterative scan (strict order)": SearchTuning(exact=False, iterative_scan="strict_order"),
}


def recalls(store: ChunkStore, corpus: Corpus, count: int) -> list[tuple[str, str, float, Latency]]:
    """(filter, tuning, recall@10, latency) with the default HNSW index built."""
    vectors = queries(corpus, count)
    lists = vectors.tolist()
    marks = np.array([bucket(i) for i in range(corpus.rows)])
    keeps = {"none": None, "10%": marks < 10, "1%": marks == 0}
    out = []
    for name, filter_ in FILTERS.items():
        expected = truth(corpus, vectors, keeps[name])
        for label, tuning in TUNINGS.items():
            if filter_ is None and label != "default (planner picks exact or HNSW)":
                continue
            found: list[list[str]] = [[] for _ in lists]

            def search(
                i: int,
                tuning: SearchTuning | None = tuning,
                filter_: dict[str, Any] | None = filter_,
                found: list[list[str]] = found,
            ) -> None:
                hits = store.search(lists[i], k=K, filter=filter_, tuning=tuning)
                found[i] = [h.chunk.chunk_id for h in hits]

            latency = latencies({label: search}, count, warmup=0)[label]
            out.append((name, label, recall(found, expected), latency))
    return out


def hybrid_latency(store: ChunkStore, corpus: Corpus, count: int) -> dict[str, Latency]:
    """Hybrid (vector + full text, fused) against its two halves, same queries."""
    vectors = queries(corpus, count).tolist()
    words = ["postgres index", "vector search", "token filter", "chunk query", "table search"]
    return latencies(
        {
            "vector (ChunkStore.search)": lambda i: store.search(vectors[i], k=K),
            "full text (ChunkStore.text_search)": lambda i: store.text_search(
                words[i % len(words)], k=K
            ),
            "hybrid (ChunkStore.hybrid_search)": lambda i: store.hybrid_search(
                vectors[i], words[i % len(words)], k=K
            ),
        },
        count,
    )


def index(store: ChunkStore) -> None:
    store.create_index(HnswIndex())  # pgvector's defaults: m=16, ef_construction=64
