"""A clustered synthetic corpus, the same in every process that asks for it.

Vectors are unit-length points around 100 random centres (real embeddings cluster by topic;
uniform noise would make every ANN index look bad and every filter look uncorrelated). Each
chunk has a ``bucket`` in 0..99 that is independent of its cluster, so ``bucket == 0`` keeps 1%
of the rows and ``bucket < 10`` keeps 10%, spread over every cluster. Only numpy is needed,
so the peers' virtualenv can import this too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Corpus", "queries", "stream"]

BLOCK = 10_000
CENTRES = 100
SPREAD = 0.35
WORDS = ("postgres", "vector", "index", "chunk", "query", "filter", "token", "search", "table")


@dataclass(frozen=True)
class Corpus:
    """``rows`` chunks of ``dim`` dimensions: vectors, texts, metadata, ids."""

    rows: int
    dim: int
    seed: int = 0

    def vectors(self, start: int = 0, stop: int | None = None) -> npt.NDArray[np.float32]:
        """Rows ``start:stop``, the same whatever the slicing (generated in fixed blocks)."""
        stop = self.rows if stop is None else stop
        if stop <= start:
            return np.zeros((0, self.dim), dtype=np.float32)
        first, last = start // BLOCK, (stop - 1) // BLOCK
        whole = np.concatenate([self._block(b) for b in range(first, last + 1)])
        return whole[start - first * BLOCK : stop - first * BLOCK]

    def _block(self, number: int) -> npt.NDArray[np.float32]:
        start = number * BLOCK
        centres = _centres(self.dim, self.seed)
        rng = np.random.default_rng((self.seed, number))
        noise = rng.normal(size=(BLOCK, self.dim)) * SPREAD / np.sqrt(self.dim / 16)
        return _unit(centres[_clusters(start, start + BLOCK)] + noise).astype(np.float32)

    def ids(self, start: int = 0, stop: int | None = None) -> list[str]:
        return [f"doc{i // 10}#{i % 10}" for i in range(start, self.rows if stop is None else stop)]

    def texts(self, start: int = 0, stop: int | None = None) -> list[str]:
        stop = self.rows if stop is None else stop
        return [
            f"chunk {i} about {WORDS[i % len(WORDS)]} and {WORDS[(i // 7) % len(WORDS)]} "
            f"in topic {c}"
            for i, c in zip(range(start, stop), _clusters(start, stop), strict=True)
        ]

    def metadata(self, start: int = 0, stop: int | None = None) -> list[dict[str, object]]:
        stop = self.rows if stop is None else stop
        return [{"source": f"doc{i // 10}.md", "bucket": bucket(i)} for i in range(start, stop)]


def bucket(i: int) -> int:
    """0..99, independent of the cluster (a multiplicative hash of the row number)."""
    return (i * 2654435761 >> 7) % 100


def buckets(rows: int) -> npt.NDArray[np.int64]:
    return np.array([bucket(i) for i in range(rows)])


def queries(corpus: Corpus, count: int) -> npt.NDArray[np.float32]:
    """Fresh points from the same clusters (not rows of the corpus)."""
    centres = _centres(corpus.dim, corpus.seed)
    rng = np.random.default_rng((corpus.seed, 1 << 30))
    label = rng.integers(0, CENTRES, count)
    noise = SPREAD * rng.normal(size=(count, corpus.dim)) / np.sqrt(corpus.dim / 16)
    return _unit(centres[label] + noise).astype(np.float32)


def stream(corpus: Corpus, batch: int = 10_000) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` batches covering the corpus, so nothing is materialised whole."""
    for start in range(0, corpus.rows, batch):
        yield start, min(corpus.rows, start + batch)


def _centres(dim: int, seed: int) -> npt.NDArray[np.float64]:
    return _unit(np.random.default_rng((seed, dim)).normal(size=(CENTRES, dim)))


def _clusters(start: int, stop: int) -> npt.NDArray[np.int64]:
    return (np.arange(start, stop) * 7919) % CENTRES


def _unit(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    unit: npt.NDArray[np.float64] = points / np.linalg.norm(points, axis=1, keepdims=True)
    return unit
