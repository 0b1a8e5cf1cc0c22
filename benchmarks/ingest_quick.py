"""Quick ingest timing: ChunkStore.upsert against raw psycopg binary COPY of the same rows.

    python -m benchmarks.ingest_quick [--rows 10000] [--dim 384] [--repeat 3]

Every run loads an empty, freshly created table on the same server, in the same process:

- raw COPY, bare table: COPY straight into a table with a primary key only (the floor);
- raw COPY, same schema: COPY straight into a collection table (its btree and GIN indexes and
  generated tsvector), computing content_hash client-side; what the schema itself costs;
- ChunkStore.upsert: validation, binary COPY into staging, INSERT ... ON CONFLICT.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks import report
from rag_pgstore import Chunk, ChunkStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    chunks = [
        Chunk(
            chunk_id=f"doc{i // 10}#{i % 10}",
            entity_id=f"doc{i // 10}",
            chunk_index=i % 10,
            total_chunks=10,
            content=f"chunk number {i} of a synthetic corpus about topic {i % 97}",
            embedding=vectors[i].tolist(),
            metadata={"n": i, "topic": i % 97},
        )
        for i in range(args.rows)
    ]
    url = os.environ.get("DATABASE_URL")
    store = ChunkStore.from_url(url, collection="bench_ingest", dim=args.dim, setup=False)
    shaped = ChunkStore.from_url(url, collection="bench_ingest_shaped", dim=args.dim, setup=False)
    assert store.engine is not None
    dsn = store.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
    bare = sql.Identifier("bench_ingest_bare")

    def copy_rows(
        conn: psycopg.Connection,
        table: sql.Composable,
        columns: list[str],
        types: list[str],
        with_hash: bool,
    ) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            table, sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with conn.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(types)
            for i, c in enumerate(chunks):
                row = [
                    c.chunk_id,
                    c.entity_id,
                    c.chunk_index,
                    c.content,
                    Jsonb(c.metadata),
                    vectors[i],
                ]
                if with_hash:
                    row += [c.total_chunks, hashlib.sha256(c.content.encode()).hexdigest()]
                copy.write_row(row)

    columns = ["chunk_id", "entity_id", "chunk_index", "content", "metadata", "embedding"]
    types = ["text", "text", "int4", "text", "jsonb", "vector"]

    def raw_bare() -> float:
        with psycopg.connect(dsn) as conn:
            register_vector(conn)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(bare))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (chunk_id text PRIMARY KEY, entity_id text, chunk_index int, "
                    "content text, metadata jsonb, embedding vector({}))"
                ).format(bare, sql.Literal(args.dim))
            )
            conn.commit()
            started = time.perf_counter()
            copy_rows(conn, bare, columns, types, with_hash=False)
            conn.commit()
            return time.perf_counter() - started

    def raw_shaped() -> float:
        shaped.drop()
        shaped.setup()
        with psycopg.connect(dsn) as conn:
            register_vector(conn)
            started = time.perf_counter()
            copy_rows(
                conn,
                sql.Identifier("bench_ingest_shaped"),
                [*columns, "total_chunks", "content_hash"],
                [*types, "int4", "text"],
                with_hash=True,
            )
            conn.commit()
            return time.perf_counter() - started

    def ours() -> float:
        store.drop()
        store.setup()
        started = time.perf_counter()
        store.upsert(chunks)
        return time.perf_counter() - started

    runs: dict[str, Callable[[], float]] = {
        "raw COPY, bare table": raw_bare,
        "raw COPY, same schema": raw_shaped,
        "ChunkStore.upsert": ours,
    }
    medians = report.interleaved(runs, args.repeat)
    floor = medians["raw COPY, bare table"]
    report.write(
        "ingest-quick",
        "Quick ingest timing",
        f"{args.rows} rows x {args.dim} d; median of {args.repeat} interleaved runs, each into a "
        "fresh empty table.",
        ["writer", "rows/s", "ratio to the bare COPY floor"],
        [[name, f"{args.rows / m:,.0f}", f"{floor / m:.2f}x"] for name, m in medians.items()],
    )
    for s in (store, shaped):
        s.drop()
        s.close()


if __name__ == "__main__":
    main()
