"""add_texts throughput with precomputed embeddings: rag-pgstore vs langchain-postgres.

    pip install langchain-postgres      # in a separate virtualenv: it pins pgvector < 0.4
    python -m benchmarks.langchain_compare [--rows 10000] [--dim 384] [--repeat 3]

All stores write the same texts, metadata and vectors (the embedding model is a lookup table,
so no time goes to embedding) into fresh tables on the same server in one run.
Writes docs/results/langchain-compare.md.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable

import numpy as np
from langchain_core.embeddings import Embeddings

from benchmarks import report
from rag_pgstore import ChunkStore
from rag_pgstore.adapters.langchain import LangChainVectorStore


class Lookup(Embeddings):
    """Precomputed vectors: embedding costs nothing, so the stores are what is measured."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.table = {t: v.tolist() for t, v in zip(texts, vectors, strict=True)}
        self.dim = vectors.shape[1]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table.get(text) or [0.0] * self.dim


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from langchain_postgres import PGEngine, PGVector, PGVectorStore

    texts = [f"chunk {i} of a synthetic corpus about topic {i % 97}" for i in range(args.rows)]
    metadatas = [{"source": f"doc{i // 10}.md", "topic": i % 97} for i in range(args.rows)]
    vectors = np.random.default_rng(0).normal(size=(args.rows, args.dim)).astype(np.float32)
    embeddings = Lookup(texts, vectors)
    ours = ChunkStore.from_url(
        os.environ.get("DATABASE_URL"), collection="cmp_ours", dim=args.dim, setup=False
    )
    assert ours.engine is not None
    url = ours.engine.url.render_as_string(hide_password=False)

    def timed(add: Callable[[list[str]], object]) -> float:
        ids = [str(uuid.uuid4()) for _ in texts]  # PGVectorStore's id column is a UUID
        started = time.perf_counter()
        add(ids)
        return time.perf_counter() - started

    def rag_pgstore() -> float:
        ours.drop()
        ours.setup()
        vs = LangChainVectorStore(ours, embedding=embeddings)
        return timed(lambda ids: vs.add_texts(texts, metadatas, ids=ids))

    def pgvector_v1() -> float:
        vs = PGVector(
            embeddings,
            connection=url,
            collection_name="cmp_v1",
            embedding_length=args.dim,
            pre_delete_collection=True,
        )
        seconds = timed(lambda ids: vs.add_texts(texts, metadatas, ids=ids))
        vs.delete_collection()
        return seconds

    engine = PGEngine.from_connection_string(url)

    def pgvectorstore_v2() -> float:
        engine.init_vectorstore_table("cmp_v2", args.dim, overwrite_existing=True)
        vs = PGVectorStore.create_sync(engine, embeddings, "cmp_v2")
        return timed(lambda ids: vs.add_texts(texts, metadatas, ids=ids))

    runs = {
        "rag-pgstore LangChainVectorStore": rag_pgstore,
        "langchain-postgres PGVector": pgvector_v1,
        "langchain-postgres PGVectorStore": pgvectorstore_v2,
    }
    medians = report.interleaved(runs, args.repeat)
    ours_median = medians["rag-pgstore LangChainVectorStore"]
    report.write(
        "langchain-compare",
        "LangChain add_texts throughput",
        f"{args.rows} texts x {args.dim} d with precomputed embeddings; median of {args.repeat} "
        "interleaved runs, each into a fresh table.",
        ["store", "texts/s", "rag-pgstore is faster by"],
        [[name, f"{args.rows / m:,.0f}", f"{m / ours_median:.1f}x"] for name, m in medians.items()],
    )
    ours.drop()
    ours.close()


if __name__ == "__main__":
    main()
