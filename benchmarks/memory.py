"""Peak client memory while ingesting a streamed corpus: run in its own process.

    python -m benchmarks.memory ROWS DIM

Prints one JSON object: rows, seconds, peak RSS of this process and its RSS before the
ingest (after imports and connecting), in MB. Chunks come from a generator, 10k at a time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.corpus import Corpus, stream
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


def main() -> None:
    rows, dim = int(sys.argv[1]), int(sys.argv[2])
    corpus = Corpus(rows, dim)
    store = ChunkStore.from_url(
        os.environ.get("DATABASE_URL"), collection="bench_memory", dim=dim, setup=False
    )
    store.drop()
    store.setup()
    before = _rss_mb()
    started = time.perf_counter()
    samples: dict[int, float] = {}  # RSS every 10% of the rows: flat means streamed

    def chunks() -> Iterator[Chunk]:
        for start, stop in stream(corpus):
            if start % max(rows // 10, 1) == 0:
                samples[start] = round(_rss_mb())
            for i, v in zip(range(start, stop), corpus.vectors(start, stop), strict=True):
                yield Chunk(chunk_id=f"c{i}", content=f"chunk {i}", embedding=v, metadata={"n": i})

    written = store.upsert(chunks())
    seconds = time.perf_counter() - started
    peak = _peak_mb()
    store.drop()
    store.close()
    result = {"rows": written, "seconds": seconds, "peak_mb": peak, "before_mb": before}
    print(json.dumps({**result, "rss_mb_at_row": samples}))


if __name__ == "__main__":
    main()
