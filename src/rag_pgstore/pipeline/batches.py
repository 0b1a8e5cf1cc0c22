"""Documents in, batches of chunked documents out: what the pipeline writes together.

A batch is full at ``max_documents`` documents or once their chunks reach ``max_chunks``; a
document is never split across two batches, so its chunks commit together. Each document is
checked and chunked as it joins, so a bad one fails before anything of its batch is written.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rag_pgstore.chunking import TextChunk, TokenChunker
from rag_pgstore.errors import InvalidInputError

__all__ = ["Batch", "Document", "abatches_of", "batches_of"]


@dataclass(frozen=True)
class Document:
    """A source document: ``id`` becomes every chunk's ``entity_id``."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Documents that are written together, already checked and chunked (by document id)."""

    documents: list[Document]
    chunks: dict[str, list[TextChunk]]


def batches_of(
    documents: Iterator[Document], chunker: TokenChunker, max_documents: int, max_chunks: int
) -> Iterator[Batch]:
    filling = _Filling(chunker, max_documents, max_chunks)
    for doc in documents:
        if full := filling.add(doc):
            yield full
    if rest := filling.rest():
        yield rest


async def abatches_of(
    documents: Iterable[Document] | AsyncIterable[Document],
    chunker: TokenChunker,
    max_documents: int,
    max_chunks: int,
) -> AsyncIterator[Batch]:
    """:func:`batches_of` for documents that may come from an async iterator."""
    if not isinstance(documents, AsyncIterable):
        for ready in batches_of(iter(documents), chunker, max_documents, max_chunks):
            yield ready
        return
    filling = _Filling(chunker, max_documents, max_chunks)
    async for doc in documents:
        if full := filling.add(doc):
            yield full
    if rest := filling.rest():
        yield rest


class _Filling:
    """The batch being filled."""

    def __init__(self, chunker: TokenChunker, max_documents: int, max_chunks: int) -> None:
        self.chunker, self.max_documents, self.max_chunks = chunker, max_documents, max_chunks
        self.batch = Batch([], {})
        self.size = 0

    def add(self, doc: Document) -> Batch | None:
        """Add ``doc``; return the batch if that filled it."""
        _check(doc)
        if doc.id in self.batch.chunks:
            raise InvalidInputError(
                f"expected distinct document ids in a batch, got {doc.id!r} twice"
            )
        chunks = self.chunker.chunk(doc.text, entity_id=doc.id, metadata=doc.metadata)
        self.batch.documents.append(doc)
        self.batch.chunks[doc.id] = chunks
        self.size += len(chunks)
        if len(self.batch.documents) >= self.max_documents or self.size >= self.max_chunks:
            return self.rest()
        return None

    def rest(self) -> Batch | None:
        """The batch as it is (``None`` if empty), and a new one to fill."""
        full, self.batch, self.size = self.batch, Batch([], {}), 0
        return full if full.documents else None


def _check(d: Document) -> None:
    if not isinstance(d, Document):
        raise InvalidInputError(f"expected rag_pgstore.Document, got {type(d).__name__}")
    if not isinstance(d.id, str) or not d.id:
        raise InvalidInputError(f"expected a non-empty str document id, got {d.id!r}")
    if not isinstance(d.text, str):
        raise InvalidInputError(
            f"expected str text in document {d.id!r}, got {type(d.text).__name__}"
        )
    if "\x00" in d.text:
        # PostgreSQL text cannot hold NUL; failing here, before anything of its batch is
        # written, names the document rather than one of its chunks.
        raise InvalidInputError(
            f"expected text without NUL characters in document {d.id!r}: is it a binary "
            "file? Decode it first, or drop the NULs"
        )
