"""A partitioned collection against one table, side by side in one run.

    python -m benchmarks.partitions [--rows 1000000] [--dim 384] [--partitions 4]
                                    [--memory 4GB] [--queries 100]

The same corpus (the clustered synthetic vectors of ``benchmarks/corpus.py``, short texts with
metadata, keyword search on) goes into a collection of one table and one of ``--partitions``
HASH partitions: ``ChunkStore.bulk_load`` of the rows (every index but the ANN one), then
``create_index(HnswIndex())`` (one HNSW index per partition when partitioned). Both run with
the same ``maintenance_work_mem`` and the server's parallel build workers. Then each answers
the same queries through ``ChunkStore.search``: recall@10 against exact neighbours (numpy) and
p50/p95, round-robin between the two collections. Results: ``docs/results/partitions.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa

from benchmarks.bulk import chunks, exact_neighbours
from benchmarks.corpus import Corpus, queries
from benchmarks.ingest import dsn
from benchmarks.page import out_dir
from benchmarks.timing import Latency, latencies, recall
from rag_pgstore import ChunkStore, HnswIndex, SearchTuning
from rag_pgstore.types import ef_search_for

K = 10
ONE = "one table"


@dataclass(frozen=True)
class Built:
    load: float  # seconds: bulk_load, every index but the ANN one
    index: float  # seconds: create_index
    index_mb: float
    memory: str  # the maintenance_work_mem of the build, as the server reported it


def build(store: ChunkStore, corpus: Corpus, vectors: Any) -> Built:
    store.drop()
    store.setup()
    started = time.perf_counter()
    store.bulk_load(chunks(corpus, vectors))
    loaded = time.perf_counter()
    store.create_index(HnswIndex())
    store.analyze()
    done = time.perf_counter()
    assert store.engine is not None
    with store.engine.connect() as conn:  # what create_index() built with
        memory = conn.execute(sa.select(sa.func.current_setting("maintenance_work_mem"))).scalar()
    with psycopg.connect(dsn(store)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_relation_size(relid)), pg_relation_size(to_regclass(%(i)s))) "
            "FROM pg_partition_tree(to_regclass(%(i)s))",
            {"i": store.collection.index_name},
        ).fetchone()
    assert row is not None
    return Built(loaded - started, done - loaded, float(row[0]) / 1e6, str(memory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--memory", default="4GB", help="maintenance_work_mem of every build")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--output", default="partitions.md", help="file name under docs/results")
    args = parser.parse_args()
    corpus = Corpus(rows=args.rows, dim=args.dim)
    vectors = corpus.vectors()  # once, outside every clock
    # Every connection of both stores builds with the same memory (create_index uses the
    # session's setting).
    options = {"connect_args": {"options": f"-c maintenance_work_mem={args.memory}"}}
    stores = {
        ONE: ChunkStore.from_url(
            os.environ.get("DATABASE_URL"),
            collection="bench_one_table",
            dim=args.dim,
            setup=False,
            engine_options=options,
        ),
        f"{args.partitions} HASH partitions": ChunkStore.from_url(
            os.environ.get("DATABASE_URL"),
            collection="bench_partitioned",
            dim=args.dim,
            setup=False,
            partitions=args.partitions,
            engine_options=options,
        ),
    }
    try:
        built = {}
        for name, store in stores.items():
            built[name] = build(store, corpus, vectors)
            print(name, built[name], flush=True)
        asked = queries(corpus, args.queries)
        truth = exact_neighbours(corpus, asked, K)
        want = [[f"doc{r // 10}#{r % 10}" for r in row] for row in truth]
        lists = asked.tolist()  # as a user hands them over, built outside every clock
        # The partitioned search asks each partition for ef_search candidates: one table
        # asked for as many in all shows whether partitions buy recall or only do more work.
        wider = ef_search_for(None, K) * args.partitions
        searches = {name: (store, SearchTuning()) for name, store in stores.items()} | {
            f"{ONE}, ef_search {wider}": (stores[ONE], SearchTuning(ef_search=wider))
        }

        def turn(store: ChunkStore, tuning: SearchTuning) -> Callable[[int], list[str]]:
            return lambda i: [h.chunk.chunk_id for h in store.search(lists[i], k=K, tuning=tuning)]

        runs = {name: turn(*way) for name, way in searches.items()}
        recalls = {
            name: recall([run(i) for i in range(args.queries)], want) for name, run in runs.items()
        }
        timed = latencies(dict(runs), args.queries)
    finally:
        for store in stores.values():
            store.drop()
            store.close()
    write(args, built, timed, recalls)


def write(
    args: argparse.Namespace,
    built: dict[str, Built],
    timed: dict[str, Latency],
    recalls: dict[str, float],
) -> None:
    command = (
        f"python -m benchmarks.partitions --rows {args.rows} --dim {args.dim} "
        f"--partitions {args.partitions} --memory {args.memory} --queries {args.queries}"
        + (f" --output {args.output}" if args.output != "partitions.md" else "")
    )
    lines = [
        "# A partitioned collection against one table",
        "",
        f"Produced by `{command}` on this machine (2 cores, embedded PostgreSQL 18, pgvector "
        f"0.8.5). {args.rows:,} chunks x {args.dim} dimensions (clustered synthetic vectors, "
        "short texts with metadata, keyword search on). Load: `ChunkStore.bulk_load` (rows, "
        "then the btree, GIN and keyword indexes); index: `create_index(HnswIndex())` (m=16, "
        f"ef_construction=64; one index per partition), maintenance_work_mem "
        f"{' and '.join(sorted({b.memory for b in built.values()}))} for both. Search: "
        f"`ChunkStore.search(k=10)` at the default hnsw.ef_search ({ef_search_for(None, K)}) "
        f"unless a row says otherwise, {args.queries} queries, recall@10 against exact "
        "neighbours.",
        "",
        "| collection | load | HNSW build | HNSW size | search p50 | p95 | p50 x one table | "
        "recall@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in timed.items():
        b = built.get(name)
        made = (
            f"{b.load:.0f} s | {b.index:.0f} s | {b.index_mb:,.0f} MB" if b else "(the same) | | "
        )
        lines.append(
            f"| {name} | {made} | {t.p50:.2f} ms | {t.p95:.2f} ms | "
            f"{t.p50 / timed[ONE].p50:.2f}x | {recalls[name]:.3f} |"
        )
    lines += [
        "",
        "A partitioned search is a Merge Append of every partition's HNSW scan: each partition "
        "returns its own nearest rows at the same ef_search, so the search weighs more "
        "candidates in all, one probe per partition. The one-table row at the partitions' "
        "total ef_search compares the two at the same candidate count.",
        "",
    ]
    out = out_dir() / "results" / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
