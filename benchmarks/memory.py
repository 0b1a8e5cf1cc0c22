"""Peak client memory while ingesting a streamed corpus: run in its own process.

    python -m benchmarks.memory ROWS DIM [input|core|langchain|llamaindex|pipeline|all]

Prints one JSON object: rows, seconds, peak RSS of this process and its RSS before the
ingest (after imports and connecting), in MB. Chunks come from a generator, 10k at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.corpus import BLOCK, Corpus, stream
from benchmarks.page import out_dir
from rag_pgstore import Chunk, ChunkStore


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_mb() -> float:
    """This process's peak RSS (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that over ``exec`` from the process that
    spawned us, so under the suite it reports the parent's size, not ours.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1000  # kB
    raise RuntimeError("expected VmHWM in /proc/self/status (Linux)")


# "input" makes the core door's chunks and writes nothing: what the generator itself costs.
DOORS = ("input", "core", "langchain", "llamaindex", "pipeline")


class _Lookup:
    """Vectors for the corpus's texts, computed from the row number each text starts with:
    an embedding model that costs nothing and holds nothing."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.block: tuple[int, Any] = (-1, None)  # the last block of rows asked for

    def __call__(self, texts: list[str]) -> list[list[float]]:
        out = []
        for text in texts:
            row = int(text.split()[1])
            number = row // BLOCK
            if self.block[0] != number:
                start = number * BLOCK
                self.block = (number, self.corpus.vectors(start, start + BLOCK))
            out.append(self.block[1][row % BLOCK].tolist())
        return out


def _write(door: str, store: ChunkStore, corpus: Corpus, sample: Callable[[int], None]) -> int:
    lookup = _Lookup(corpus)
    if door in ("input", "core"):

        def chunks() -> Iterator[Chunk]:
            for start, stop in stream(corpus):
                sample(start)
                for i, v in zip(range(start, stop), corpus.vectors(start, stop), strict=True):
                    yield Chunk(
                        chunk_id=f"c{i}", content=f"chunk {i}", embedding=v, metadata={"n": i}
                    )

        return sum(1 for _ in chunks()) if door == "input" else store.upsert(chunks())
    if door == "langchain":
        from langchain_core.embeddings import Embeddings

        from rag_pgstore.adapters.langchain import LangChainVectorStore

        class Model(Embeddings):
            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                return lookup(texts)

            def embed_query(self, text: str) -> list[float]:
                return lookup([text])[0]

        def texts() -> Iterator[str]:
            for start, stop in stream(corpus):
                sample(start)
                yield from corpus.texts(start, stop)

        return len(LangChainVectorStore(store, embedding=Model()).add_texts(texts()))
    if door == "llamaindex":
        from llama_index.core.schema import TextNode

        from rag_pgstore.adapters.llamaindex import LlamaIndexVectorStore

        li = LlamaIndexVectorStore(store)
        written = 0
        for start, stop in stream(corpus, 2_000):  # add() takes lists: callers send batches
            sample(start)
            vectors = corpus.vectors(start, stop).tolist()
            nodes = [
                TextNode(id_=f"n{i}", text=t, metadata={"n": i}, embedding=v)
                for i, t, v in zip(
                    range(start, stop), corpus.texts(start, stop), vectors, strict=True
                )
            ]
            written += len(li.add(nodes))
        return written
    from rag_pgstore.chunking import TokenChunker
    from rag_pgstore.pipeline import Document, Pipeline
    from rag_pgstore.pipeline.embedders import Embedder

    def documents() -> Iterator[Document]:
        for start, stop in stream(corpus):
            sample(start)
            for i, text in zip(range(start, stop), corpus.texts(start, stop), strict=True):
                yield Document(f"d{i}", text, {"n": i})

    model = Embedder(f"bench-memory-{time.time_ns()}", lookup)
    pipeline = Pipeline(store, model, TokenChunker(max_tokens=512))
    return pipeline.ingest(documents()).chunks_written


def every_door(rows: int, dim: int) -> None:
    """Each door in a child process of its own; the table into ``docs/results/memory.md``."""
    results = []
    for door in DOORS:
        child = [sys.executable, "-m", "benchmarks.memory", str(rows), str(dim), door]
        done = subprocess.run(child, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    lines = [
        "# Client memory while streaming a large ingest through each door",
        "",
        f"Produced by `python -m benchmarks.memory {rows} {dim} all` on this machine. Each door "
        "in a fresh process: `input` only runs the core door's generator of `Chunk`s, writing "
        "nothing (the input's own cost: its vectors are computed 10,000 at a time), the core "
        "`upsert` of that generator, LangChain "
        "`add_texts` of a generator of texts (the model returns lists of floats), LlamaIndex "
        "`add` called once per 2,000 `TextNode`s (it takes lists), the pipeline's `ingest` "
        "of a generator of one-chunk `Document`s. Peak RSS is the process's high-water mark "
        "(`VmHWM`), imports and connection included.",
        "",
        "| door | chunks | seconds | RSS before, MB | peak RSS, MB | RSS every 10% of the rows, MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        trail = ", ".join(str(v) for v in r["rss_mb_at_row"].values())
        lines.append(
            f"| {r['door']} | {r['rows']:,} | {r['seconds']:.0f} | {r['before_mb']:.0f} | "
            f"{r['peak_mb']:.0f} | {trail} |"
        )
    out = out_dir() / "results" / "memory.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([*lines, ""]))
    print(out.read_text())


def main() -> None:
    rows, dim = int(sys.argv[1]), int(sys.argv[2])
    door = sys.argv[3] if len(sys.argv) > 3 else "core"
    if door == "all":
        every_door(rows, dim)
        return
    if door not in DOORS:
        raise SystemExit(f"expected a door among {', '.join(DOORS)}, got {door!r}")
    corpus = Corpus(rows, dim)
    store = ChunkStore.from_url(
        os.environ.get("DATABASE_URL"), collection="bench_memory", dim=dim, setup=False
    )
    store.drop()
    store.setup()
    before = _rss_mb()
    started = time.perf_counter()
    samples: dict[int, float] = {}  # RSS every 10% of the rows: flat means streamed

    def sample(start: int) -> None:
        if start % max(rows // 10, 1) == 0:
            samples[start] = round(_rss_mb())

    written = _write(door, store, corpus, sample)
    seconds = time.perf_counter() - started
    peak = _peak_mb()
    store.drop()
    store.close()
    result = {"door": door, "rows": written, "seconds": seconds, "peak_mb": peak}
    print(json.dumps({**result, "before_mb": before, "rss_mb_at_row": samples}))


if __name__ == "__main__":
    main()
