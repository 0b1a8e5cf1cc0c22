"""A large load with an HNSW index three ways, side by side in one run.

    python -m benchmarks.bulk [--rows 1000000] [--dim 384] [--m 16] [--ef-construction 64]
                              [--memory 4GB] [--queries 100] [--skip-incremental]

- **raw**: the collection's table without its secondary indexes, a binary COPY of every row,
  then ``CREATE INDEX`` for each of them and the HNSW index (what a DBA would do by hand);
- **bulk_load**: ``ChunkStore.bulk_load`` of a stream into a collection that has its HNSW index
  (the rows first, the indexes once at the end, in one transaction);
- **incremental**: ``ChunkStore.upsert`` of one list of 5,000 after another into the same kind
  of collection, every index kept up to date row by row, each call its own transaction.

Both index builds get the same ``maintenance_work_mem`` and the server's parallel build
workers. Recall@10 of each resulting index (``hnsw.ef_search`` 40, the default) is measured
against exact nearest neighbours computed in numpy. Results: ``docs/results/bulk.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from pgvector.psycopg import register_vector
from psycopg import sql

from benchmarks.corpus import Corpus, queries, stream
from benchmarks.ingest import _copy, dsn
from benchmarks.page import out_dir
from rag_pgstore import Chunk, ChunkStore, HnswIndex
from rag_pgstore.schema import deferred_indexes

COLLECTION = "bench_bulk"
BATCH = 5_000


def chunks(corpus: Corpus, all_vectors: Any) -> Iterator[Chunk]:
    for start, stop in stream(corpus):
        ids, texts = corpus.ids(start, stop), corpus.texts(start, stop)
        metas, vectors = corpus.metadata(start, stop), all_vectors[start:stop]
        for i in range(stop - start):
            yield Chunk(
                chunk_id=ids[i],
                entity_id=ids[i].split("#")[0],
                chunk_index=(start + i) % 10,
                content=texts[i],
                embedding=vectors[i],
                metadata=metas[i],
            )


def runs(store: ChunkStore, corpus: Corpus, spec: HnswIndex, memory: str) -> dict[str, Any]:
    c = store.collection
    vectors = corpus.vectors()  # once, outside every clock

    def fresh() -> None:
        store.drop()
        store.setup()
        store.create_index(spec)  # on the empty table: instant

    def raw() -> dict[str, float]:
        fresh()
        with psycopg.connect(dsn(store)) as conn:
            register_vector(conn)
            present = {
                row[0]
                for row in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = %s", [c.name]
                )
            }
            indexes = deferred_indexes(
                c, present, {"using": "hnsw", "m": spec.m, "ef_construction": spec.ef_construction}
            )
            for index in indexes:
                conn.execute(
                    sql.SQL("DROP INDEX {}").format(sql.Identifier(c.schema, str(index.name)))
                )
            conn.commit()
            started = time.perf_counter()
            _copy(conn, sql.Identifier(c.name), corpus, vectors, shaped=True)
            conn.commit()
            loaded = time.perf_counter()
        engine = store.engine
        assert engine is not None
        with engine.begin() as tx:
            tx.execute(sa.select(sa.func.set_config("maintenance_work_mem", memory, True)))
            for index in indexes:
                tx.execute(sa.schema.CreateIndex(index))
            tx.execute(sa.text(f"ANALYZE {c.name}"))  # our own fixed name
        done = time.perf_counter()
        return {"load": loaded - started, "index": done - loaded, "total": done - started}

    def bulk() -> dict[str, float]:
        fresh()
        started = time.perf_counter()
        store.bulk_load(chunks(corpus, vectors), maintenance_work_mem=memory)
        return {"total": time.perf_counter() - started}

    def incremental() -> dict[str, float]:
        fresh()
        started = time.perf_counter()
        batch: list[Chunk] = []
        for chunk in chunks(corpus, vectors):
            batch.append(chunk)
            if len(batch) == BATCH:
                store.upsert(batch)
                batch = []
        if batch:
            store.upsert(batch)
        store.analyze()
        return {"total": time.perf_counter() - started}

    return {"raw": raw, "bulk_load": bulk, "incremental": incremental}


def recall(store: ChunkStore, corpus: Corpus, count: int) -> float:
    asked = queries(corpus, count)
    truth = exact_neighbours(corpus, asked, 10)
    found = 0
    for q, want in zip(asked, truth, strict=True):
        got = {hit.chunk.chunk_id for hit in store.search(q, k=10)}
        found += len(got & {f"doc{r // 10}#{r % 10}" for r in want})
    return found / (10 * count)


def exact_neighbours(corpus: Corpus, asked: Any, k: int) -> Any:
    best = np.zeros((len(asked), 0), dtype=np.int64)
    scores = np.zeros((len(asked), 0), dtype=np.float32)
    for start, stop in stream(corpus, 100_000):
        sims = asked @ corpus.vectors(start, stop).T
        scores = np.concatenate([scores, sims], axis=1)
        best = np.concatenate([best, np.arange(start, stop)[None, :].repeat(len(asked), 0)], axis=1)
        keep = np.argsort(-scores, axis=1)[:, :k]
        scores = np.take_along_axis(scores, keep, 1)
        best = np.take_along_axis(best, keep, 1)
    return best


def index_mb(store: ChunkStore) -> float:
    assert store.engine is not None
    with psycopg.connect(dsn(store)) as conn:
        row = conn.execute(
            "SELECT pg_relation_size(to_regclass(%s))", [store.collection.index_name]
        ).fetchone()
        assert row is not None
        return float(row[0]) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--memory", default="4GB", help="maintenance_work_mem of both builds")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--skip-incremental", action="store_true")
    parser.add_argument("--output", default="bulk.md", help="file name under docs/results")
    args = parser.parse_args()
    corpus = Corpus(rows=args.rows, dim=args.dim)
    spec = HnswIndex(m=args.m, ef_construction=args.ef_construction)
    store = ChunkStore.from_url(
        os.environ.get("DATABASE_URL"), collection=COLLECTION, dim=args.dim, setup=False
    )
    results: dict[str, dict[str, float]] = {}
    ways: dict[str, Callable[[], dict[str, float]]] = runs(store, corpus, spec, args.memory)
    for name, way in ways.items():
        if name == "incremental" and args.skip_incremental:
            continue
        timing = way()
        timing["recall"] = recall(store, corpus, args.queries)
        timing["index_mb"] = index_mb(store)
        results[name] = timing
        print(name, timing, flush=True)
    store.drop()
    write(args, results)


def write(args: argparse.Namespace, results: dict[str, dict[str, float]]) -> None:
    raw = results["raw"]["total"]
    command = (
        f"python -m benchmarks.bulk --rows {args.rows} --dim {args.dim} --m {args.m} "
        f"--ef-construction {args.ef_construction} --memory {args.memory} "
        f"--queries {args.queries}"
        + (" --skip-incremental" if args.skip_incremental else "")
        + (f" --output {args.output}" if args.output != "bulk.md" else "")
    )
    lines = [
        "# A large load with an HNSW index: bulk, incremental, raw",
        "",
        f"Produced by `{command}` on this machine (2 cores, embedded PostgreSQL 18, "
        f"pgvector 0.8.5). {args.rows:,} chunks x {args.dim} dimensions (clustered synthetic "
        f"vectors, short texts with metadata, keyword search on), HNSW m={args.m}, "
        f"ef_construction={args.ef_construction}, maintenance_work_mem {args.memory} for both "
        "builds. Recall@10 at hnsw.ef_search 40 against exact neighbours.",
        "",
        "| way | wall time | x raw | recall@10 | HNSW index |",
        "|---|---|---|---|---|",
    ]
    labels = {
        "raw": "raw: COPY, then CREATE INDEX",
        "bulk_load": "ChunkStore.bulk_load",
        "incremental": "ChunkStore.upsert, 5,000 per call, index in place",
    }
    for name, r in results.items():
        detail = f" (COPY {r['load']:.0f} s + indexes {r['index']:.0f} s)" if "load" in r else ""
        lines.append(
            f"| {labels[name]} | {r['total']:.0f} s{detail} | {r['total'] / raw:.2f}x | "
            f"{r['recall']:.3f} | {r['index_mb']:,.0f} MB |"
        )
    out = out_dir() / "results" / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([*lines, ""]))
    print(out.read_text())


if __name__ == "__main__":
    main()
