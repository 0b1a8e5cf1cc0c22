"""Every door into a collection, called the way its users call it, beside a raw COPY into a
table of the same schema, in one run.

    python -m benchmarks.doors [--rows 20000] [--dim 384] [--repeat 3] [--only PREFIX,...]
                               [--output doors.md]

The inputs are what each framework hands over: a LangChain ``Embeddings`` that returns lists
of floats (precomputed, so the figure measures us, not a model), ``TextNode`` s with metadata
and embeddings for LlamaIndex, ``Chunk`` s for the core. Each run writes into a fresh, empty
collection; the floor is a binary COPY of the same rows into the same kind of table
(``benchmarks.ingest``). The median of ``--repeat`` runs is kept, runs interleaved so a slow
moment of the machine does not land on one door. Results: ``docs/results/doors.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from benchmarks.corpus import Corpus
from benchmarks.ingest import _copy, dsn
from benchmarks.page import out_dir
from rag_pgstore import Chunk, ChunkStore

FLOOR = "raw COPY, same schema"


class ListEmbeddings:
    """A LangChain ``Embeddings`` handing back precomputed vectors as lists of floats."""

    def __init__(self, by_text: dict[str, list[float]]) -> None:
        self.by_text = by_text

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.by_text[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.by_text[text]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.by_text[text]


def doors(url: str | None, corpus: Corpus) -> dict[str, Callable[[], float]]:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from llama_index.core.schema import TextNode

    from rag_pgstore.adapters.langchain import LangChainVectorStore
    from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore

    store = ChunkStore.from_url(url, collection="bench_doors", dim=corpus.dim, setup=False)
    texts, metas, ids = corpus.texts(), corpus.metadata(), corpus.ids()
    vectors = corpus.vectors()
    lists = vectors.tolist()
    # Texts are distinct in the corpus; the fake model looks their vectors up.
    embeddings: Embeddings = type("Fake", (ListEmbeddings, Embeddings), {})(
        dict(zip(texts, lists, strict=True))
    )
    docs = [
        Document(page_content=t, metadata=m, id=i)
        for t, m, i in zip(texts, metas, ids, strict=True)
    ]

    def chunks() -> Iterator[Chunk]:
        for i in range(corpus.rows):
            yield Chunk(
                chunk_id=ids[i],
                entity_id=ids[i].split("#")[0],
                content=texts[i],
                embedding=vectors[i],
                metadata=metas[i],
            )

    def nodes() -> list[Any]:
        return [
            TextNode(id_=i, text=t, metadata=m, embedding=v)
            for i, t, m, v in zip(ids, texts, metas, lists, strict=True)
        ]

    def fresh() -> None:
        store.drop()
        store.setup()
        settle(store)

    def timed(write: Callable[[], object]) -> float:
        fresh()
        started = time.perf_counter()
        write()
        return time.perf_counter() - started

    def floor() -> float:
        fresh()
        with psycopg.connect(dsn(store)) as conn:
            register_vector(conn)
            started = time.perf_counter()
            _copy(conn, sql.Identifier(store.collection.name), corpus, vectors, shaped=True)
            conn.commit()
            return time.perf_counter() - started

    from rag_pgstore.chunking import TokenChunker
    from rag_pgstore.pipeline import Document as Source
    from rag_pgstore.pipeline import Pipeline
    from rag_pgstore.pipeline.embedders import Embedder

    by_text = dict(zip(texts, lists, strict=True))
    # A new name each run: the embedding cache must not serve the second run's vectors.
    runs_of_pipeline = iter(range(1_000_000))

    def pipeline_with(bulk: bool = False, **options: Any) -> Callable[[], float]:
        def run() -> float:
            model = Embedder(
                f"bench-lookup-{next(runs_of_pipeline)}-{time.time_ns()}",
                lambda batch: [by_text[t] for t in batch],
            )
            documents = [
                Source(i.split("#")[0] + f"-{n}", t, m)
                for n, (i, t, m) in enumerate(zip(ids, texts, metas, strict=True))
            ]
            chunker = TokenChunker(max_tokens=512)
            return timed(
                lambda: Pipeline(store, model, chunker, **options).ingest(documents, bulk=bulk)
            )

        return run

    def cli(folder: Path) -> float:
        fresh()
        url = dsn(store) if os.environ.get("DATABASE_URL") else None
        command = [sys.executable, "-m", "rag_pgstore.cli", "ingest", str(folder)]
        command += ["--embedder", "hash", "--dim", str(corpus.dim), "--collection", "bench_doors"]
        command += ["--no-prune", "--json"] + (["--database-url", url] if url else [])
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        return time.perf_counter() - started

    lc = LangChainVectorStore(store, embedding=embeddings)
    li = LlamaIndexVectorStore(store)

    def li_async() -> float:
        built = nodes()  # the caller's nodes exist before the call, as with add()
        return timed(lambda: asyncio.run(_aadd(li, built)))

    def li_sync() -> float:
        built = nodes()
        return timed(lambda: li.add(built))

    return {
        FLOOR: floor,
        "ChunkStore.upsert": lambda: timed(lambda: store.upsert(list(chunks()))),
        "ChunkStore.upsert (stream)": lambda: timed(lambda: store.upsert(chunks())),
        "ChunkStore.aupsert": lambda: timed(lambda: asyncio.run(_aupsert(store, chunks))),
        "ChunkStore.bulk_load (stream)": lambda: timed(lambda: store.bulk_load(chunks())),
        "LangChain add_texts": lambda: timed(lambda: lc.add_texts(texts, metas, ids=ids)),
        "LangChain add_documents": lambda: timed(lambda: lc.add_documents(docs)),
        "LangChain add_embeddings": lambda: timed(
            lambda: lc.add_embeddings(texts, lists, metas, ids=ids)
        ),
        "LangChain aadd_texts": lambda: timed(
            lambda: asyncio.run(lc.aadd_texts(texts, metas, ids=ids))
        ),
        "LlamaIndex add": li_sync,
        "LlamaIndex async_add": li_async,
        "Pipeline.ingest (documents)": pipeline_with(),
        "Pipeline.ingest, writers=4": pipeline_with(writers=4),
        "Pipeline.ingest, bulk=True": pipeline_with(bulk=True),
        "Pipeline.ingest, embedding_cache=False": pipeline_with(embedding_cache=False),
        "rag-pgstore ingest (files, hash)": lambda: cli(_files(texts)),
    }


def settle(store: ChunkStore) -> None:
    """Write the last run's pages out before the next run starts, so no door pays for the
    door before it (a checkpoint needs a superuser: elsewhere the runs are noisier)."""
    with (
        psycopg.connect(dsn(store), autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")


def _files(texts: list[str]) -> Path:
    """The texts as files in a temporary folder (written once, outside the clock)."""
    folder = Path(tempfile.gettempdir()) / f"rag-pgstore-doors-{len(texts)}"
    if not folder.exists():
        folder.mkdir()
        for n, text in enumerate(texts):
            (folder / f"{n:07}.txt").write_text(text)
    return folder


async def _aupsert(store: ChunkStore, chunks: Callable[[], Iterator[Chunk]]) -> None:
    await store.aupsert(list(chunks()))
    assert store.async_engine is not None
    await store.async_engine.dispose()  # this loop ends here


async def _aadd(vs: Any, nodes: list[Any]) -> None:
    await vs.async_add(nodes)
    engine = vs.client.async_engine
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--only", default="", help="comma-separated prefixes of the doors to run (and the floor)"
    )
    parser.add_argument("--output", default="doors.md", help="file name under docs/results/")
    args = parser.parse_args()
    corpus = Corpus(rows=args.rows, dim=args.dim)
    runs = doors(os.environ.get("DATABASE_URL"), corpus)
    if args.only:
        wanted = tuple(p.strip() for p in args.only.split(",") if p.strip())
        runs = {n: run for n, run in runs.items() if n == FLOOR or n.startswith(wanted)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, run in runs.items():
            seconds[name].append(run())
    median = {name: statistics.median(s) for name, s in seconds.items()}
    floor = median[FLOOR]
    command = (
        f"python -m benchmarks.doors --rows {args.rows} --dim {args.dim} --repeat {args.repeat}"
    )
    if args.only:
        command += f" --only {shlex.quote(args.only)}"
    if args.output != "doors.md":
        command += f" --output {args.output}"
    rows = [f"| {name} | {args.rows / s:,.0f} | {floor / s:.2f}x |" for name, s in median.items()]
    out = out_dir() / "results" / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "\n".join(
            [
                "# Every door into a collection, against a raw COPY",
                "",
                f"Produced by `{command}` on this machine (2 cores, embedded PostgreSQL). "
                f"{args.rows:,} chunks x {args.dim} dimensions with metadata, each door called "
                "as its users call it (a LangChain `Embeddings` returning lists of floats, "
                "`TextNode`s with embeddings and metadata; the pipeline with a model that looks the "
                "vectors up, one document per chunk; the CLI on one file per chunk with the "
                "hashing embedder, its process start included), into a fresh collection; "
                "median of "
                f"{args.repeat} interleaved runs.",
                "",
                "| door | chunks/s | x raw COPY, same schema |",
                "|---|---|---|",
                *rows,
                "",
            ]
        )
    )
    print(out.read_text())


if __name__ == "__main__":
    main()
