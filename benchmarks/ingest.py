"""Ingest throughput with precomputed embeddings: the raw COPY floor, our core, our adapters.

Every writer loads the same corpus into a fresh, empty table on the same server; inputs
(numpy rows for the core and COPY, lists for the frameworks, as they hand them over) are built
before the clock starts. The peers run in their own virtualenv (``peers.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks.corpus import Corpus, stream
from rag_pgstore import Chunk, ChunkStore

__all__ = ["WRITERS", "dsn", "ingest_runs"]

FLOOR = "raw psycopg COPY (binary), bare table"
SAME_SCHEMA = "raw psycopg COPY (binary), our table"
WRITERS = (FLOOR, SAME_SCHEMA, "ChunkStore.upsert", "LangChainVectorStore", "LlamaIndexVectorStore")
COLUMNS = ["chunk_id", "entity_id", "chunk_index", "content", "metadata", "embedding"]


def dsn(store: ChunkStore) -> str:
    assert store.engine is not None
    return store.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")


def _copy(
    conn: psycopg.Connection[Any],
    table: sql.Composable,
    corpus: Corpus,
    vectors: Any,
    shaped: bool,
) -> None:
    columns = [*COLUMNS, "content_hash"] if shaped else COLUMNS
    types = ["text", "text", "int4", "text", "jsonb", "vector", "text"][: len(columns)]
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(types)
        for start, stop in stream(corpus):
            rows = zip(
                corpus.ids(start, stop),
                corpus.texts(start, stop),
                corpus.metadata(start, stop),
                vectors[start:stop],
                strict=True,
            )
            for i, (cid, text, meta, vector) in enumerate(rows, start):
                row = [cid, cid.split("#")[0], i % 10, text, Jsonb(meta), vector]
                if shaped:
                    row.append(hashlib.sha256(text.encode()).hexdigest())
                copy.write_row(row)


def ingest_runs(
    url: str | None, corpus: Corpus, *, frameworks: bool = True
) -> dict[str, Callable[[], float]]:
    """One timed run per writer (seconds), each into a fresh table."""
    import time

    store = ChunkStore.from_url(url, collection="bench_ingest", dim=corpus.dim, setup=False)
    bare = sql.Identifier("bench_ingest_bare")
    # Inputs are built once, outside the clock.
    texts = corpus.texts()
    metas = corpus.metadata()
    ids = corpus.ids()
    vectors = corpus.vectors()  # numpy rows, as an embedding model returns them

    def chunks() -> Iterator[Chunk]:
        for i in range(corpus.rows):
            yield Chunk(
                chunk_id=ids[i],
                entity_id=ids[i].split("#")[0],
                chunk_index=i % 10,
                content=texts[i],
                embedding=vectors[i],
                metadata=metas[i],
            )

    def fresh() -> None:
        store.drop()
        store.setup()

    def raw_bare() -> float:
        with psycopg.connect(dsn(store)) as conn:
            register_vector(conn)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(bare))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (chunk_id text PRIMARY KEY, entity_id text, chunk_index int, "
                    "content text, metadata jsonb, embedding vector({}))"
                ).format(bare, sql.Literal(corpus.dim))
            )
            conn.commit()
            started = time.perf_counter()
            _copy(conn, bare, corpus, vectors, shaped=False)
            conn.commit()
            seconds = time.perf_counter() - started
            conn.execute(sql.SQL("DROP TABLE {}").format(bare))
            conn.commit()
            return seconds

    def raw_shaped() -> float:
        fresh()
        with psycopg.connect(dsn(store)) as conn:
            register_vector(conn)
            started = time.perf_counter()
            _copy(conn, sql.Identifier(store.collection.name), corpus, vectors, shaped=True)
            conn.commit()
            return time.perf_counter() - started

    def core() -> float:
        fresh()
        started = time.perf_counter()
        store.upsert(chunks())
        return time.perf_counter() - started

    runs: dict[str, Callable[[], float]] = {
        FLOOR: raw_bare,
        SAME_SCHEMA: raw_shaped,
        "ChunkStore.upsert": core,
    }
    if frameworks:
        runs.update(_framework_runs(store, corpus, fresh))
    return runs


def _framework_runs(
    store: ChunkStore, corpus: Corpus, fresh: Callable[[], None]
) -> dict[str, Callable[[], float]]:
    import time

    from llama_index.core.schema import TextNode

    from rag_pgstore.adapters.langchain import HashEmbeddings, LangChainVectorStore
    from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore

    texts, metas, ids = corpus.texts(), corpus.metadata(), corpus.ids()
    lists = corpus.vectors().tolist()  # what the frameworks hand over

    def langchain() -> float:
        fresh()
        vs = LangChainVectorStore(store, embedding=HashEmbeddings(dim=corpus.dim))
        started = time.perf_counter()
        vs.add_embeddings(texts, lists, metas, ids=ids)
        return time.perf_counter() - started

    def llamaindex() -> float:
        nodes = [
            TextNode(id_=i, text=t, metadata=m, embedding=v)
            for i, t, m, v in zip(ids, texts, metas, lists, strict=True)
        ]
        fresh()
        vs = LlamaIndexVectorStore(store)
        started = time.perf_counter()
        vs.add(nodes)
        return time.perf_counter() - started

    return {"LangChainVectorStore": langchain, "LlamaIndexVectorStore": llamaindex}
