"""Documents in, chunks out, and back: the LangChain adapter's translations, without I/O.

Texts come in batches of ids, texts and metadatas (ids generated where missing), become
chunks, and hits become ``Document``s again.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from langchain_core.documents import Document

from rag_pgstore.errors import InvalidInputError
from rag_pgstore.types import Chunk, Filter, ScoredChunk, StoredChunk

__all__ = [
    "batches",
    "deletion",
    "distance",
    "in_order",
    "search_options",
    "to_chunk",
    "to_document",
    "with_vectors",
]

Batch = tuple[list[str], list[str], list[dict[str, Any]]]


def batches(
    texts: Iterable[str],
    metadatas: Sequence[dict[str, Any]] | None,
    ids: Sequence[str | None] | None,
    size: int,
) -> Iterator[Batch]:
    """Batches of (ids, texts, metadatas) of ``size`` texts, ids generated where missing."""
    texts_it = iter(texts)
    metadatas_it: Iterator[dict[str, Any]] = (
        iter(metadatas) if metadatas is not None else itertools.repeat({})
    )
    ids_it: Iterator[str | None] = iter(ids) if ids is not None else itertools.repeat(None)
    while batch := list(itertools.islice(texts_it, size)):
        batch_meta = list(itertools.islice(metadatas_it, len(batch)))
        batch_ids = list(itertools.islice(ids_it, len(batch)))
        if len(batch_meta) != len(batch) or len(batch_ids) != len(batch):
            raise InvalidInputError("expected as many metadatas and ids as texts")
        yield [i if i is not None else str(uuid.uuid4()) for i in batch_ids], batch, batch_meta
    if metadatas is not None and next(metadatas_it, None) is not None:
        raise InvalidInputError("expected as many metadatas as texts, got more metadatas")


def to_chunk(
    entity_key: str | None,
    chunk_id: str,
    text: str,
    metadata: dict[str, Any],
    vector: Sequence[float],
) -> Chunk:
    """A document as a chunk; ``entity_id`` from the metadata key ``entity_key`` if a string."""
    entity = metadata.get(entity_key) if entity_key else None
    return Chunk(
        chunk_id=chunk_id,
        entity_id=entity if isinstance(entity, str) else None,
        content=text,
        embedding=vector,
        metadata=metadata,
    )


def with_vectors(
    entity_key: str | None,
    parts: Iterator[Batch],
    embeddings: Iterable[Sequence[float]],
    written: list[str],
) -> Iterator[Chunk]:
    """Chunks of ``parts`` with precomputed ``embeddings``, one each; ids go to ``written``."""
    vectors = iter(embeddings)
    for batch_ids, batch, batch_meta in parts:
        written.extend(batch_ids)
        for chunk_id, text, meta in zip(batch_ids, batch, batch_meta, strict=True):
            vector = next(vectors, None)
            if vector is None:
                raise InvalidInputError("expected as many embeddings as texts, got fewer")
            yield to_chunk(entity_key, chunk_id, text, meta, vector)


def deletion(ids: Sequence[str] | None, filter: Filter | None) -> Filter:
    """The one filter a ``delete(ids, filter)`` call deletes by: what matches both."""
    if ids is None and not filter:
        raise InvalidInputError("expected ids or a filter; use store.clear() to delete everything")
    if isinstance(ids, str):
        raise InvalidInputError(f"expected a list of ids, got the string {ids!r}")
    parts: list[Filter] = [] if ids is None else [{"chunk_id": {"$in": list(ids)}}]
    return {"$and": [*parts, filter]} if filter else parts[0]


def to_document(hit: ScoredChunk | StoredChunk) -> Document:
    chunk = hit.chunk if isinstance(hit, ScoredChunk) else hit
    return Document(id=chunk.chunk_id, page_content=chunk.content, metadata=chunk.metadata)


def in_order(ids: Sequence[str], chunks: Sequence[StoredChunk]) -> list[Document]:
    """Documents for the ``ids`` found, in the order asked, each once."""
    by_id = {c.chunk_id: c for c in chunks}
    return [to_document(by_id[i]) for i in dict.fromkeys(ids) if i in by_id]


def distance(hit: ScoredChunk) -> float:
    assert hit.distance is not None  # vector searches always have one
    return hit.distance


SEARCH_OPTIONS = ("offset", "min_score", "tuning")


def search_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pass through the core's search options; refuse anything else rather than ignore it."""
    unknown = sorted(set(kwargs) - set(SEARCH_OPTIONS))
    if unknown:
        raise InvalidInputError(
            f"expected search options among {', '.join(SEARCH_OPTIONS)}, got {unknown}"
        )
    return {key: kwargs[key] for key in SEARCH_OPTIONS if key in kwargs}
