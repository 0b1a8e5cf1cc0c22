"""Table sync at seed scale: a backfill, then random updates drained by 1, 2 and 4 workers.

    python -m benchmarks.sync [--rows 100000] [--updates 10000] [--workers 1 2 4]

A ``products`` table of ``--rows`` GCIDE dictionary entries (headword as title, entry as
description, a category and a price; ``--corpus docs`` uses paragraphs of this project's
docs), synced into a fresh collection with a hashing embedder (microseconds a text, so the
figures measure the sync, the pipeline and PostgreSQL, not a model). The backfill is timed;
then, for each worker count, ``--updates`` random rows get a new title in one transaction
and that many worker processes drain the queue: changes applied per second, and the lag
(the age of the oldest change when the queue is empty). Results: docs/results/sync.md.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import sqlalchemy as sa

from benchmarks import gcide
from benchmarks.page import out_dir
from rag_pgstore import ChunkStore
from rag_pgstore.pipeline import Embedder, hash_embedding
from rag_pgstore.sync import TableSync, add_sync, backfill, drain, remove_sync, sync_status

DIM = 64
COLLECTION = "bench_sync_chunks"
SCHEMA = "bench_sync"
ROOT = Path(__file__).parent.parent


def model() -> Embedder:
    return Embedder("bench-sync-hash", lambda texts: [hash_embedding(t, DIM) for t in texts])


def rows_of(kind: str, n: int) -> list[tuple[str, str]]:
    if kind == "gcide":
        return [(h, t[:1500]) for h, t in gcide.entries(gcide.ensure(), limit=n)]
    parts = [
        (page.stem, part.strip())
        for page in sorted((ROOT / "docs").glob("*.md"))
        for part in page.read_text().split("\n\n")
        if part.strip()
    ]
    return [parts[i % len(parts)] for i in range(n)]


def products(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "products",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("title", sa.Text),
        sa.Column("description", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("stock", sa.Integer),
    )


def _worker(url: str, name: str) -> int:
    store = ChunkStore.from_url(url, collection=COLLECTION)
    try:
        return drain(store, name, model(), batch_size=100).applied
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--corpus", choices=["gcide", "docs"], default="gcide")
    args = parser.parse_args()
    store = ChunkStore.from_url(os.environ.get("DATABASE_URL"), collection=COLLECTION, dim=DIM)
    assert store.engine is not None
    url = store.engine.url.render_as_string(hide_password=False)
    for old in sync_status(store):
        remove_sync(store, old.name)
    store.clear()
    table = products(sa.MetaData(schema=SCHEMA))
    with store.engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(SCHEMA, cascade=True, if_exists=True))
        conn.execute(sa.schema.CreateSchema(SCHEMA))
    table.metadata.create_all(store.engine)
    source = rows_of(args.corpus, args.rows)
    with store.engine.begin() as conn:
        for first in range(0, len(source), 5_000):
            conn.execute(
                sa.insert(table),
                [
                    {"id": i, "title": h, "description": t, "category": h[:1].lower(),
                     "price": (i % 1000) / 10, "stock": 1}
                    for i, (h, t) in enumerate(source[first : first + 5_000], start=first + 1)
                ],
            )  # fmt: skip
    name = "bench_products"
    spec = TableSync(
        name, table=f"{SCHEMA}.products", id="id", text=("title", "description"),
        metadata=("category", "price"), collection=COLLECTION,
    )  # fmt: skip
    add_sync(store, spec)
    started = time.perf_counter()
    backfilled = backfill(store, name, model(), batch_size=500)
    backfill_s = time.perf_counter() - started
    results = []
    rng = random.Random(7)
    context = get_context("spawn")
    for workers in args.workers:
        ids = rng.sample(range(1, len(source) + 1), min(args.updates, len(source)))
        with store.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.id.in_(ids))
                .values(title=sa.literal(f"r{workers} ") + table.c.title)
            )
        queued = sync_status(store, name)[0].pending
        started = time.perf_counter()
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            applied = sum(pool.map(_worker, [url] * workers, [name] * workers))
        seconds = time.perf_counter() - started
        assert sync_status(store, name)[0].pending == 0
        results.append((workers, queued, applied, seconds))
        print(workers, queued, applied, f"{seconds:.1f}s", flush=True)
    chunks = store.count()
    remove_sync(store, name)
    with store.engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(SCHEMA, cascade=True))
    store.drop()
    store.close()
    write(args, len(source), backfilled, backfill_s, chunks, results)


def write(
    args: argparse.Namespace,
    rows: int,
    backfilled: int,
    backfill_s: float,
    chunks: int,
    results: list[tuple[int, int, int, float]],
) -> None:
    command = (
        f"python -m benchmarks.sync --rows {args.rows} --updates {args.updates} --workers "
        + " ".join(map(str, args.workers))
        + (" --corpus docs" if args.corpus == "docs" else "")
    )
    lines = [
        "# Table sync at seed scale",
        "",
        f"Produced by `{command}` on this machine ({os.cpu_count()} cores, the database on "
        f"the same cores). {rows:,} {'GCIDE entries' if args.corpus == 'gcide' else 'doc paragraphs'} "
        f"in a `products` table, synced (title + description as text, category and price as "
        f"metadata) with a hashing embedder ({DIM} d), so the figures measure the sync, the "
        "pipeline and PostgreSQL, not a model.",
        "",
        "## Backfill",
        "",
        "| rows | chunks | seconds | rows/s |",
        "|---|---|---|---|",
        f"| {backfilled:,} | {chunks:,} | {backfill_s:.1f} | {backfilled / backfill_s:,.0f} |",
        "",
        "## Draining updates",
        "",
        f"{args.updates:,} random rows get a new title in one transaction (each row queued once: "
        "the trigger fires per row), then that many worker processes drain the queue; the lag is "
        "the time until the queue is empty, which here is the age of the oldest change.",
        "",
        "| workers | changes queued | rows applied | seconds (= lag) | changes/s | x 1 worker |",
        "|---|---|---|---|---|---|",
    ]
    one = results[0][3]
    for workers, queued, applied, seconds in results:
        lines.append(
            f"| {workers} | {queued:,} | {applied:,} | {seconds:.1f} | {queued / seconds:,.0f} | "
            f"{one / seconds:.2f}x |"
        )
    lines += [
        "",
        "Every changed row is re-read and re-ingested: its chunks' content hashes are compared "
        "and the changed ones embedded and written; a worker holds 100 source rows at a time. "
        "On two cores, workers beyond two share the same CPUs with PostgreSQL.",
        "",
    ]
    out = out_dir() / "results" / "sync.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
