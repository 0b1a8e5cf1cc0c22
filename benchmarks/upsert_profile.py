"""Where ``ChunkStore.upsert`` spends its time, and what our table costs a bare COPY.

    python -m benchmarks.upsert_profile [--rows 10000] [--dim 384]

Writes docs/results/upsert-profile.md (or into ``$BENCHMARK_RESULTS_DIR``), medians of 9
interleaved runs on one server:

1. each step of ``upsert`` for a list of new chunks (existence check, then COPY straight into
   the table with rows encoded as they stream) and for the same ids again with new content
   (COPY into the staging table, then ``INSERT ... ON CONFLICT``);
2. a raw binary COPY of the same rows into a bare table, then into tables that add, one at a
   time, what ours has: the ``content_hash`` column, a generated ``tsvector``, its GIN index,
   the metadata GIN index, the entity btree, and the remaining columns with their defaults.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks import ingest
from benchmarks.corpus import Corpus
from rag_pgstore import Chunk, ChunkStore, codec
from rag_pgstore.driver import sync as sync_driver
from rag_pgstore.schema import ENCODERS

REPEAT = 9  # medians of 9: this is a small, noisy measurement
STEP_NAMES = {
    "Fetch": "existence check",
    "Copy": "COPY",
    "Execute": "SET LOCAL, staging DDL, merge",
}
BASE = "chunk_id text PRIMARY KEY, entity_id text, chunk_index int, content text, metadata jsonb"
TSV = "tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content)) STORED"
REST = "total_chunks int DEFAULT 1, adapter_data jsonb, created_at timestamptz DEFAULT now(), "
REST += "updated_at timestamptz DEFAULT now()"
# (what is added, extra columns, extra DDL), each layer keeping the ones before it.
LAYERS = (
    ("bare table (the floor)", "", ""),
    ("+ content_hash column", ", content_hash text", ""),
    ("+ generated tsvector", f", {TSV}", ""),
    ("+ GIN index on the tsvector", "", "CREATE INDEX ON {t} USING gin (tsv)"),
    ("+ GIN index on metadata", "", "CREATE INDEX ON {t} USING gin (metadata)"),
    ("+ btree on (entity_id, chunk_index)", "", "CREATE INDEX ON {t} (entity_id, chunk_index)"),
    ("+ other columns and defaults = our table", f", {REST}", ""),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    corpus = Corpus(args.rows, args.dim)
    url = os.environ.get("DATABASE_URL")
    store = ChunkStore.from_url(url, collection="bench_profile", dim=args.dim, setup=False)
    steps_ms = _step_profile(store, corpus)
    layers_ms = _layer_profile(ingest.dsn(store), corpus)
    adapters_ms = _adapter_profile(store, corpus)
    store.drop()
    floor = layers_ms[LAYERS[0][0]]
    lines = [
        "# Where upsert spends its time",
        "",
        f"Command: `python -m benchmarks.upsert_profile --rows {args.rows} --dim {args.dim}` "
        f"(median of {REPEAT} interleaved runs, each into a fresh table, same server). Client "
        "and server share the machine's cores, so rows move by 10-20% from one run to the "
        "next: read smaller differences as noise.",
        "",
        "## The steps of `ChunkStore.upsert`",
        "",
        "Checking and encoding is timed alone for reference: inside `upsert` it runs while the "
        "COPY streams, overlapping the server's work.",
        "",
        "| step | ms |",
        "|---|---|",
        *(f"| {name} | {ms:.0f} |" for name, ms in steps_ms.items()),
        "",
        "## What our table costs a raw binary COPY",
        "",
        "The same rows, by raw psycopg COPY, into tables that add one feature at a time.",
        "",
        "| table | ms | chunks/s vs the bare table |",
        "|---|---|---|",
        *(f"| {name} | {ms:.0f} | {floor / ms:.2f}x |" for name, ms in layers_ms.items()),
        "",
        "## What the adapters do before the store sees a chunk",
        "",
        "Client-side only, no database: the frameworks hand over lists of floats and their own "
        "objects, which become `Chunk`s and then a float32 array.",
        "",
        "| work | ms |",
        "|---|---|",
        *(f"| {name} | {ms:.0f} |" for name, ms in adapters_ms.items()),
        "",
    ]
    folder = Path(os.environ.get("BENCHMARK_RESULTS_DIR") or Path(__file__).parent.parent / "docs")
    out = folder / "results" / "upsert-profile.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


def _step_profile(store: ChunkStore, corpus: Corpus) -> dict[str, float]:
    ids, texts, vectors = corpus.ids(), corpus.texts(), corpus.vectors()
    new = [
        Chunk(chunk_id=cid, content=text, embedding=vector, metadata=meta)
        for cid, text, vector, meta in zip(ids, texts, vectors, corpus.metadata(), strict=True)
    ]
    replacing = [
        Chunk(chunk_id=c.chunk_id, content=c.content + ".", embedding=c.embedding) for c in new
    ]
    runs: list[dict[str, float]] = []
    original = sync_driver._step
    for _ in range(REPEAT):
        this_run: dict[str, float] = {}
        gc.collect()
        started = time.perf_counter()
        list(codec.check_batch(new, dim=corpus.dim, vector_type="vector").rows(ENCODERS))
        this_run["checking and encoding alone (client)"] = time.perf_counter() - started
        store.drop()
        store.setup()
        for phase, chunks in (("new ids", new), ("same ids, new content", replacing)):
            sync_driver._step = _timed(original, phase, this_run)
            try:
                started = time.perf_counter()
                store.upsert(chunks)
                this_run[f"{phase}: ChunkStore.upsert, total"] = time.perf_counter() - started
            finally:
                sync_driver._step = original
        runs.append(this_run)
    return {name: 1000 * statistics.median(run[name] for run in runs) for name in runs[0]}


def _timed(original: Any, phase: str, into: dict[str, float]) -> Any:
    """``driver.sync._step``, adding the time of each database step to ``into``."""

    def timed(conn: Any, step: Any) -> Any:
        started = time.perf_counter()
        reply = original(conn, step)
        if (name := STEP_NAMES.get(type(step).__name__)) is not None:
            key = f"{phase}: {name}"
            into[key] = into.get(key, 0.0) + time.perf_counter() - started
        return reply

    return timed


def _adapter_profile(store: ChunkStore, corpus: Corpus) -> dict[str, float]:
    from llama_index.core.schema import TextNode

    from rag_pgstore.adapters.langchain import HashEmbeddings, LangChainVectorStore, documents
    from rag_pgstore.adapters.llamaindex.vectorstore import to_chunk

    texts, metas, ids = corpus.texts(), corpus.metadata(), corpus.ids()
    lists = corpus.vectors().tolist()
    nodes = [
        TextNode(id_=i, text=t, metadata=m, embedding=v)
        for i, t, m, v in zip(ids, texts, metas, lists, strict=True)
    ]
    lc = LangChainVectorStore(store, embedding=HashEmbeddings(dim=corpus.dim))

    def lc_given() -> list[Chunk]:
        parts = documents.batches(texts, metas, ids, lc.embed_batch_size)
        return list(documents.with_vectors(lc.entity_key, parts, lists, []))

    lc_chunks = lc_given()
    work: dict[str, Callable[[], object]] = {
        "LangChain: texts, lists of floats, metadata -> Chunks": lc_given,
        "LlamaIndex: TextNodes -> Chunks (node serialised for adapter_data)": lambda: [
            to_chunk(n) for n in nodes
        ],
        "those Chunks -> checked batch (incl. lists of floats -> float32)": lambda: (
            codec.check_batch(lc_chunks, dim=corpus.dim, vector_type="vector")
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(REPEAT):
        for name, run in work.items():
            gc.collect()
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def _layer_profile(dsn: str, corpus: Corpus) -> dict[str, float]:
    runs: dict[str, Callable[[], float]] = {}
    columns = BASE + f", embedding vector({corpus.dim})"
    ddl: list[str] = []
    for name, more_columns, more_ddl in LAYERS:
        columns += more_columns
        ddl = [*ddl, more_ddl] if more_ddl else ddl
        runs[name] = _layer_run(dsn, corpus, columns, list(ddl))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(REPEAT):
        for name, run in runs.items():
            gc.collect()
            times[name].append(run())
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def _layer_run(dsn: str, corpus: Corpus, columns: str, ddl: list[str]) -> Callable[[], float]:
    table = sql.Identifier("bench_layer")
    hashed = "content_hash" in columns
    names = ["chunk_id", "entity_id", "chunk_index", "content", "metadata", "embedding"]
    names += ["content_hash"] if hashed else []
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, names))
    )
    ids, texts, metas, vectors = corpus.ids(), corpus.texts(), corpus.metadata(), corpus.vectors()

    def run() -> float:
        with psycopg.connect(dsn) as conn:
            register_vector(conn)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            # The layers' DDL is this module's own constant text; nothing from outside.
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(columns)))
            for statement in ddl:
                conn.execute(sql.SQL(statement).format(t=table))
            conn.commit()
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(copy) as writer:
                types = ["text", "text", "int4", "text", "jsonb", "vector", "text"]
                writer.set_types(types[: len(names)])
                for i, cid in enumerate(ids):
                    row = [cid, cid.split("#")[0], i % 10, texts[i], Jsonb(metas[i]), vectors[i]]
                    if hashed:
                        row.append(hashlib.sha256(texts[i].encode()).hexdigest())
                    writer.write_row(row)
            conn.commit()
            seconds = time.perf_counter() - started
            conn.execute(sql.SQL("DROP TABLE {}").format(table))
            conn.commit()
            return seconds

    return run


if __name__ == "__main__":
    main()
