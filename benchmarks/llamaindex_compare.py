"""LlamaIndex: add throughput and query latency, rag-pgstore vs llama-index-vector-stores-postgres.

    pip install llama-index-vector-stores-postgres   # separate virtualenv: pins pgvector < 0.4
    python -m benchmarks.llamaindex_compare [--rows 10000] [--dim 384] [--queries 200]

Both stores get the same nodes with precomputed embeddings, in fresh tables on the same server
in one run (each with its default schema: JSONB metadata, no ANN index), then answer the same
DEFAULT-mode queries. Writes docs/results/llamaindex-compare.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import sqlalchemy as sa
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import BasePydanticVectorStore, VectorStoreQuery

from benchmarks import report
from rag_pgstore import ChunkStore
from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    from llama_index.vector_stores.postgres import PGVectorStore

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    queries = rng.normal(size=(args.queries, args.dim)).astype(np.float32).tolist()

    def nodes() -> list[TextNode]:
        return [
            TextNode(
                id_=f"n{i}",
                text=f"chunk {i} about topic {i % 97}",
                metadata={"topic": i % 97},
                embedding=vectors[i].tolist(),
            )
            for i in range(args.rows)
        ]

    ours_store = ChunkStore.from_url(
        os.environ.get("DATABASE_URL"), collection="cmp_li_ours", dim=args.dim, setup=False
    )
    ours_store.drop()
    ours_store.setup()
    assert ours_store.engine is not None
    url = ours_store.engine.url
    with ours_store.engine.begin() as conn:  # a fresh table for them too (they prefix "data_")
        conn.execute(
            sa.schema.DropTable(sa.Table("data_cmp_li_theirs", sa.MetaData()), if_exists=True)
        )
    theirs = PGVectorStore(
        connection_string=url.set(drivername="postgresql+psycopg2").render_as_string(
            hide_password=False
        ),
        async_connection_string=url.set(drivername="postgresql+asyncpg").render_as_string(
            hide_password=False
        ),
        table_name="cmp_li_theirs",
        embed_dim=args.dim,
        use_jsonb=True,
    )
    stores: dict[str, BasePydanticVectorStore] = {
        "rag-pgstore LlamaIndexVectorStore": LlamaIndexVectorStore(ours_store),
        "llama-index PGVectorStore": theirs,
    }
    adds: dict[str, float] = {}
    latencies: dict[str, list[float]] = {}
    for name, store in stores.items():
        batch = nodes()
        started = time.perf_counter()
        store.add(batch)
        adds[name] = time.perf_counter() - started
    for name, store in stores.items():

        def run(q: list[float], s: BasePydanticVectorStore = store) -> object:
            return s.query(VectorStoreQuery(query_embedding=q, similarity_top_k=10))

        run(queries[0])  # warm the pool and the plan cache
        latencies[name] = []
        for q in queries:
            started = time.perf_counter()
            run(q)
            latencies[name].append(time.perf_counter() - started)
    ours = "rag-pgstore LlamaIndexVectorStore"
    p50_ours = statistics.median(latencies[ours])
    rows = []
    for name in stores:
        p50 = statistics.median(latencies[name])
        p95 = statistics.quantiles(latencies[name], n=20)[-1]
        rows.append(
            [
                name,
                f"{args.rows / adds[name]:,.0f}",
                f"{adds[name] / adds[ours]:.1f}x",
                f"{p50 * 1000:.2f}",
                f"{p95 * 1000:.2f}",
                f"{p50 / p50_ours:.2f}x",
            ]
        )
    report.write(
        "llamaindex-compare",
        "LlamaIndex add throughput and query latency",
        f"{args.rows} nodes x {args.dim} d with precomputed embeddings, {args.queries} DEFAULT-mode "
        "queries (k=10), exact search: no ANN index.",
        [
            "store",
            "add, nodes/s",
            "add: rag-pgstore faster by",
            "query p50 ms",
            "query p95 ms",
            "p50 ratio to rag-pgstore",
        ],
        rows,
    )
    ours_store.drop()
    ours_store.close()


if __name__ == "__main__":
    main()
