"""How fast the bundled model embeds real chunks: batch size, and 1 vs 2 processes.

    python -m benchmarks.embedding [--chunks 2000] [--gcide /usr/share/dictd]

Chunks are GCIDE dictionary entries cut by the pipeline's chunker (256 tokens, the model's
own input limit), as an ingest would hand them over. Each configuration embeds the same
chunks after a warm-up call (model loading and pool start are not timed), in one process
(PyTorch's threads over every core) or in sentence-transformers' pool of worker processes
(the cores split between them). Results: ``docs/results/embedding.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks import gcide
from benchmarks.page import out_dir
from rag_pgstore.chunking import TokenChunker
from rag_pgstore.pipeline.embedders import local_embedder


def chunks(directory: Path, count: int) -> list[str]:
    chunker = TokenChunker(max_tokens=256, overlap=0)
    texts: list[str] = []
    for headword, text in gcide.entries(directory):
        texts.extend(c.text for c in chunker.chunk(text, entity_id=headword))
        if len(texts) >= count:
            return texts[:count]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2_000)
    parser.add_argument("--gcide", type=Path, default=gcide.DEFAULT_DIR)
    args = parser.parse_args()
    texts = chunks(gcide.ensure(args.gcide), args.chunks)
    characters = sum(map(len, texts)) / len(texts)
    configurations = [(1, 16), (1, 32), (1, 64), (1, 128), (2, 32), (2, 64)]
    rows = []
    for processes, batch in configurations:
        embedder = local_embedder(batch, processes=processes)
        embedder.embed(texts[:64])  # loads the model, starts the pool
        started = time.perf_counter()
        embedder.embed(texts)
        seconds = time.perf_counter() - started
        rows.append((processes, batch, len(texts) / seconds))
        print(processes, batch, f"{len(texts) / seconds:.1f} chunks/s", flush=True)
    best_one = max(rate for p, _, rate in rows if p == 1)
    command = f"python -m benchmarks.embedding --chunks {args.chunks}"
    lines = [
        "# Embedding throughput of the bundled model (all-MiniLM-L6-v2, CPU)",
        "",
        f"Produced by `{command}` on this machine ({os.cpu_count()} cores, no GPU). "
        f"{len(texts):,} chunks of GCIDE dictionary entries (256-token chunks, mean "
        f"{characters:.0f} characters), embedded after a warm-up call.",
        "",
        "| processes | batch size | chunks/s | x best single process |",
        "|---|---|---|---|",
        *(f"| {p} | {b} | {rate:.1f} | {rate / best_one:.2f}x |" for p, b, rate in rows),
        "",
    ]
    out = out_dir() / "results" / "embedding.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
