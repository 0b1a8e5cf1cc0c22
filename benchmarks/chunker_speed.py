"""Chunker throughput against raw tiktoken ``encode_ordinary`` over the same text, one run.

    python -m benchmarks.chunker_speed [--megabytes 5] [--repeat 3]

The text is the Python Language Reference (benchmarks/data), repeated to the size asked.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks import report
from benchmarks.retrieval import DATA
from rag_pgstore.chunking import TokenChunker, load_encoding


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    corpus = "\n\n".join(
        json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines()
    )
    size = int(args.megabytes * 1_000_000)
    text = (corpus * (size // len(corpus) + 1))[:size]
    encoding = load_encoding("cl100k_base")
    chunker = TokenChunker(max_tokens=512, overlap=64)

    def raw() -> float:
        started = time.perf_counter()
        encoding.encode_ordinary(text)
        return time.perf_counter() - started

    def chunk() -> float:
        started = time.perf_counter()
        chunker.spans(text)
        return time.perf_counter() - started

    medians = report.interleaved(
        {"tiktoken encode_ordinary": raw, "TokenChunker.spans": chunk}, args.repeat
    )
    floor = medians["tiktoken encode_ordinary"]
    report.write(
        "chunker-speed",
        "Chunker throughput",
        f"{args.megabytes:g} MB of the Python Language Reference, cl100k_base, max_tokens=512, "
        f"overlap=64; median of {args.repeat} interleaved runs.",
        ["what", "MB/s", "ratio to encode_ordinary"],
        [[name, f"{size / m / 1e6:.1f}", f"{floor / m:.2f}x"] for name, m in medians.items()],
    )


if __name__ == "__main__":
    main()
