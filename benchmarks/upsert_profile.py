"""Where ``ChunkStore.upsert`` spends its time, step by step, next to the raw COPY floors.

    python -m benchmarks.upsert_profile [--rows 10000] [--dim 384]

Writes docs/results/upsert-profile.md (or into ``$BENCHMARK_RESULTS_DIR``): the median of 5
runs of client-side validation and encoding, the binary COPY into the staging table, and the
``INSERT ... SELECT ... ON CONFLICT`` into the collection, each into a fresh table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import ingest
from benchmarks.corpus import Corpus
from rag_pgstore import Chunk, ChunkStore, steps, validate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    corpus = Corpus(args.rows, args.dim)
    ids, texts, metas, vectors = corpus.ids(), corpus.texts(), corpus.metadata(), corpus.vectors()
    chunks = [
        Chunk(chunk_id=ids[i], content=texts[i], embedding=vectors[i], metadata=metas[i])
        for i in range(args.rows)
    ]
    url = os.environ.get("DATABASE_URL")
    runs = ingest.ingest_runs(url, corpus, frameworks=False)
    store = ChunkStore.from_url(url, collection="bench_profile", dim=args.dim, setup=False)
    spent: dict[str, list[float]] = {}
    floors: dict[str, list[float]] = {}
    original = steps._sync_step
    names = {"Copy": "COPY into staging", "Execute": "INSERT ... ON CONFLICT (and staging DDL)"}
    for _ in range(5):
        for name in (ingest.FLOOR, ingest.SAME_SCHEMA):
            floors.setdefault(name, []).append(runs[name]())
        this_run: dict[str, float] = {}

        def timed(conn: Any, step: Any, this_run: dict[str, float] = this_run) -> Any:
            started = time.perf_counter()
            reply = original(conn, step)
            key = names.get(type(step).__name__, type(step).__name__)
            this_run[key] = this_run.get(key, 0.0) + time.perf_counter() - started
            return reply

        started = time.perf_counter()
        validate.encode_batch(chunks, dim=args.dim, vector_type="vector")
        this_run["validation and encoding (client)"] = time.perf_counter() - started
        store.drop()
        store.setup()
        steps._sync_step = timed
        started = time.perf_counter()
        store.upsert(chunks)
        this_run["ChunkStore.upsert, total"] = time.perf_counter() - started
        steps._sync_step = original
        for key, seconds in this_run.items():
            spent.setdefault(key, []).append(seconds)
    store.drop()
    rows = [[n, f"{1000 * statistics.median(v):.0f}"] for n, v in floors.items()]
    rows += [[n, f"{1000 * statistics.median(v):.0f}"] for n, v in spent.items()]
    lines = [
        "# Where upsert spends its time",
        "",
        f"Command: `python -m benchmarks.upsert_profile --rows {args.rows} --dim {args.dim}` "
        "(median of 5 runs, each into a fresh table, same server).",
        "",
        "| step | ms |",
        "|---|---|",
        *(f"| {a} | {b} |" for a, b in rows),
        "",
    ]
    folder = Path(os.environ.get("BENCHMARK_RESULTS_DIR") or Path(__file__).parent.parent / "docs")
    out = folder / "results" / "upsert-profile.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
