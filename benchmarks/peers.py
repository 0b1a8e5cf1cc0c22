"""The peers' side of the suite, run by ``suite.py`` with the peers' own Python.

    .venv-peers/bin/python -m benchmarks.peers URL SPEC_JSON

langchain-postgres pins pgvector < 0.4 and llama-index-vector-stores-postgres brings its own
drivers, so they live in a separate virtualenv (scripts/benchmarks.sh makes it). This module
imports only numpy, the corpus and the peers, and prints one JSON object: versions, ingest
seconds per size and store, and (unless ``queries`` is 0) query latencies, exact and then with
an HNSW index built with the options our store uses, on ``query_corpus``. One dimension per
process: langchain-postgres' PGVector keeps the first dimension it saw for the process.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.corpus import Corpus, queries
from benchmarks.timing import latencies

K = 10
V1, V2, LI = (
    "langchain-postgres PGVector",
    "langchain-postgres PGVectorStore",
    "llama-index PGVectorStore",
)


class _Lookup:
    """Embeddings that are never called for writes (vectors are given) and unused for reads."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("the benchmark passes embeddings")

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError("the benchmark passes query vectors")


def _stores(url: str, dim: int) -> dict[str, Callable[[], Any]]:
    from langchain_core.embeddings import Embeddings
    from langchain_postgres import PGEngine, PGVector, PGVectorStore
    from llama_index.vector_stores.postgres import PGVectorStore as LlamaPG
    from sqlalchemy.engine import make_url

    embeddings = type("Lookup", (_Lookup, Embeddings), {})()
    parsed = make_url(url)
    engine = PGEngine.from_connection_string(url)

    def v1() -> Any:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            # Its two tables are shared by every collection and keep the first dimension.
            conn.execute("DROP TABLE IF EXISTS langchain_pg_embedding, langchain_pg_collection")
        return PGVector(
            embeddings,
            connection=url,
            collection_name="peer_v1",
            embedding_length=dim,
            pre_delete_collection=True,
            use_jsonb=True,
        )

    def v2() -> Any:
        engine.init_vectorstore_table("peer_v2", dim, overwrite_existing=True)
        return PGVectorStore.create_sync(engine, embeddings, "peer_v2")

    def li() -> Any:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS data_peer_li")
        return LlamaPG(
            connection_string=parsed.set(drivername="postgresql+psycopg2").render_as_string(
                hide_password=False
            ),
            async_connection_string=parsed.set(drivername="postgresql+asyncpg").render_as_string(
                hide_password=False
            ),
            table_name="peer_li",
            embed_dim=dim,
            use_jsonb=True,
        )

    return {V1: v1, V2: v2, LI: li}


def _add(name: str, store: Any, corpus: Corpus) -> float:
    texts, metas, vectors = corpus.texts(), corpus.metadata(), corpus.vectors().tolist()
    if name == LI:
        from llama_index.core.schema import TextNode

        nodes = [
            TextNode(id_=i, text=t, metadata=m, embedding=v)
            for i, t, m, v in zip(corpus.ids(), texts, metas, vectors, strict=True)
        ]
        started = time.perf_counter()
        store.add(nodes)
        return time.perf_counter() - started
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, i)) for i in corpus.ids()]  # v2 wants UUIDs
    started = time.perf_counter()
    store.add_embeddings(texts, vectors, metas, ids=ids)
    return time.perf_counter() - started


def _search(name: str, store: Any) -> Callable[[list[float]], object]:
    if name == LI:
        from llama_index.core.vector_stores.types import VectorStoreQuery

        return lambda q: store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=K))
    return lambda q: store.similarity_search_by_vector(q, k=K)


def _by_index(
    search: Callable[[list[float]], object], vectors: list[list[float]]
) -> Callable[[int], object]:
    return lambda i: search(vectors[i])


_TABLES = {V1: "langchain_pg_embedding", V2: "peer_v2", LI: "data_peer_li"}


def _hnsw(url: str, name: str) -> None:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = 16, ef_construction = 64)"
            ).format(sql.Identifier(_TABLES[name]))
        )


def _first_line(exc: Exception) -> str:
    """The error's type and first line, never its (huge) statement parameters."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {text[0][:160]}"


def main() -> None:
    url, spec = sys.argv[1], json.loads(sys.argv[2])
    out: dict[str, Any] = {
        "versions": {
            p: metadata.version(p)
            for p in ("langchain-postgres", "llama-index-vector-stores-postgres", "pgvector")
        },
        "ingest": {},
        "latency": {},
        "failed": {},  # "store at size" -> the error's first line; that store is left out
    }
    query_corpus = Corpus(*spec["query_corpus"])
    stores: dict[str, Any] = {}
    for rows, dim, repeat in spec["sizes"]:
        corpus = Corpus(rows, dim)
        makers = _stores(url, dim)
        times: dict[str, list[float]] = {name: [] for name in makers}
        for _ in range(repeat):
            for name, make in makers.items():
                if name in times:
                    stores[name] = make()
                    try:
                        times[name].append(_add(name, stores[name], corpus))
                    except Exception as exc:  # a peer's failure is a result, not a crash
                        out["failed"][f"{name} at {rows}x{dim}"] = _first_line(exc)
                        del times[name], stores[name]
        out["ingest"][f"{rows}x{dim}"] = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    if not spec["queries"]:
        print(json.dumps(out))
        return
    if not spec["sizes"] or Corpus(*spec["sizes"][-1][:2]) != query_corpus:
        for name, make in _stores(url, query_corpus.dim).items():
            stores[name] = make()
            _add(name, stores[name], query_corpus)
    vectors = queries(query_corpus, spec["queries"]).tolist()
    for phase in ("exact", "hnsw"):
        if phase == "hnsw":
            for name in stores:
                _hnsw(url, name)
        runs = {name: _by_index(_search(name, store), vectors) for name, store in stores.items()}
        result = latencies(runs, len(vectors))
        out["latency"][phase] = {n: [lat.p50, lat.p95] for n, lat in result.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
