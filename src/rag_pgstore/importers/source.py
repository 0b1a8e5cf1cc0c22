"""What every source is: a name to resume by, and pages of chunks in a stable order."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from rag_pgstore.types import Chunk

__all__ = ["Page", "Source", "fingerprint"]


class Page(Protocol):
    """One page of a source: its chunks, and the key to continue after."""

    @property
    def chunks(self) -> list[Chunk]: ...

    @property
    def last(self) -> str: ...


class Source(Protocol):
    """A store to import from."""

    @property
    def name(self) -> str:
        """Stable across runs: the import's place is recorded under it."""
        ...

    def pages(self, after: str | None, size: int) -> Iterator[Page]:
        """Pages of up to ``size`` chunks, in order, starting after the key ``after``."""
        ...


def fingerprint(
    chunk_id: str, entity_id: str, content: str, vector: Sequence[float], element: str
) -> int:
    """A row's part of the checksum: its id, document, text and vector, the vector rounded to
    the collection's element type (``<f4`` for ``vector``, ``<f2`` for ``halfvec``), so a
    source in float64 JSON and the imported column agree. Metadata is not in it (JSON
    numbers may come back in another form); counts and ids are."""
    digest = hashlib.sha256()
    for text in (chunk_id, entity_id, content):
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(np.asarray(vector, dtype=element).tobytes())
    return int.from_bytes(digest.digest()[:8], "big")
