"""Parallel writers on one machine: the pipeline at 1, 2 and 4 writers, and where the CPU goes.

    python -m benchmarks.writers [--rows 20000] [--dim 384] [--repeat 3]

The pipeline ingests the same one-chunk documents (a model that looks their vectors up, no
embedding cache: what is measured is the writing) into a fresh collection of each kind:
without a keyword index (``keyword="off"``), with one (BM25: a generated ``tsvector`` and its
GIN index, the default), and with one plus an HNSW index. For each run it records the wall
time, the CPU seconds of this process (chunking, encoding, the driver) and those of the
PostgreSQL server's processes (the embedded server's, found by their parent; left out when
``DATABASE_URL`` points elsewhere). Medians of ``--repeat`` interleaved runs. Results:
``docs/results/writers.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from typing import Any

import psutil

from benchmarks.corpus import Corpus
from benchmarks.doors import settle
from benchmarks.page import out_dir
from rag_pgstore import ChunkStore, HnswIndex
from rag_pgstore.chunking import TokenChunker
from rag_pgstore.pipeline import Document, Pipeline
from rag_pgstore.pipeline.embedders import Embedder

KINDS = ("keyword off", "keyword (BM25)", "keyword + HNSW")
WRITERS = (1, 2, 4)


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_processes(store: ChunkStore) -> list[psutil.Process]:
    """The server's processes: the postmaster whose backend serves this connection, and its
    children (backends, WAL writer, checkpointer...)."""
    assert store.engine is not None
    with store.engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    try:
        postmaster = psutil.Process(pid).parent()
    except psutil.Error:
        return []
    if postmaster is None or postmaster.name() not in ("postgres", "postmaster"):
        return []
    return [postmaster]


def _server_cpu(postmasters: list[psutil.Process]) -> float | None:
    if not postmasters:
        return None
    total = 0.0
    for process in [postmasters[0], *postmasters[0].children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # a backend that ended between the listing and the reading
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def run(url: str | None, corpus: Corpus, repeat: int) -> dict[tuple[str, int], dict[str, Any]]:
    texts, metas, ids = corpus.texts(), corpus.metadata(), corpus.ids()
    by_text = dict(zip(texts, corpus.vectors().tolist(), strict=True))
    documents = [
        Document(f"{i.split('#')[0]}-{n}", t, m)
        for n, (i, t, m) in enumerate(zip(ids, texts, metas, strict=True))
    ]
    model = Embedder("bench-writers-lookup", lambda batch: [by_text[t] for t in batch])
    chunker = TokenChunker(max_tokens=512)

    def one(kind: str, writers: int) -> dict[str, float | None]:
        store = ChunkStore.from_url(
            url,
            collection="bench_writers",
            dim=corpus.dim,
            keyword="off" if kind == "keyword off" else "bm25",
            setup=False,
        )
        store.drop()
        store.setup()
        if kind == "keyword + HNSW":
            store.create_index(HnswIndex())
        settle(store)
        postmasters = _server_processes(store)
        client, server = _client_cpu(), _server_cpu(postmasters)
        started = time.perf_counter()
        pipeline = Pipeline(store, model, chunker, writers=writers, embedding_cache=False)
        report = pipeline.ingest(documents)
        seconds = time.perf_counter() - started
        assert report.chunks_written == corpus.rows
        after = _server_cpu(postmasters)
        store.drop()
        store.close()
        return {
            "seconds": seconds,
            "client": _client_cpu() - client,
            "server": None if server is None or after is None else after - server,
        }

    samples: dict[tuple[str, int], list[dict[str, float | None]]] = {
        (k, w): [] for k in KINDS for w in WRITERS
    }
    for _ in range(repeat):
        for key, runs in samples.items():
            runs.append(one(*key))
            print(key, runs[-1], flush=True)
    return {key: _median(runs) for key, runs in samples.items()}


def _median(runs: list[dict[str, float | None]]) -> dict[str, Any]:
    by_time = sorted(runs, key=lambda r: r["seconds"] or 0.0)
    return by_time[len(by_time) // 2]  # one whole run: its CPU figures belong to its time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    corpus = Corpus(rows=args.rows, dim=args.dim)
    results = run(os.environ.get("DATABASE_URL"), corpus, args.repeat)
    command = f"python -m benchmarks.writers --rows {args.rows} --dim {args.dim}"
    command += f" --repeat {args.repeat}"
    rows = []
    for kind in KINDS:
        one_writer = results[(kind, 1)]["seconds"]
        for writers in WRITERS:
            r = results[(kind, writers)]
            server = "n/a" if r["server"] is None else f"{r['server']:.1f}"
            rows.append(
                f"| {kind} | {writers} | {args.rows / r['seconds']:,.0f} | "
                f"{one_writer / r['seconds']:.2f}x | {r['client']:.1f} | {server} |"
            )
    lines = [
        "# Parallel writers: the pipeline at 1, 2 and 4 writers",
        "",
        f"Produced by `{command}` on this machine ({os.cpu_count()} cores, embedded "
        f"PostgreSQL). {args.rows:,} one-chunk documents x {args.dim} dimensions, a model "
        "that looks the vectors up, no embedding cache, into a fresh collection of each "
        "kind; the run with the median time of "
        f"{args.repeat}. CPU seconds: this process (chunking, checks, encoding, the driver) "
        "and the server's processes (the COPY's rows, their `tsvector`, the GIN and HNSW "
        "insertions, WAL).",
        "",
        "| collection | writers | chunks/s | x 1 writer | client CPU s | server CPU s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        _BOUND,
    ]
    out = out_dir() / "results" / "writers.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(out.read_text())


_BOUND = (
    "Two cores bound what more writers can give: once the client's and the server's CPU "
    "seconds add up to twice the wall time, both cores are busy, and a third or fourth "
    "writer only interleaves the same work."
)

if __name__ == "__main__":
    main()
