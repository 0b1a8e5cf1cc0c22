"""The write side of :class:`LangChainVectorStore`: documents in, by batches, streamed.

Texts are embedded ``embed_batch_size`` at a time and streamed into one transaction of the
core store (binary COPY), so 100k texts never form one statement and only one batch of vectors
is in memory.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rag_pgstore.errors import InvalidChunkError
from rag_pgstore.records import Chunk

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from rag_pgstore.store import ChunkStore

__all__ = ["DocumentWrites"]

Filter = dict[str, Any]


class DocumentWrites:
    """``add_texts``, ``add_embeddings`` and ``delete``, sync and async."""

    if TYPE_CHECKING:
        store: ChunkStore
        embedding: Embeddings
        entity_key: str | None
        embed_batch_size: int

    def _prepare(
        self,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any]] | None,
        ids: Sequence[str | None] | None,
    ) -> Iterator[tuple[list[str], list[str], list[dict[str, Any]]]]:
        """Batches of (ids, texts, metadatas), ids generated where missing."""
        texts_it = iter(texts)
        metadatas_it: Iterator[dict[str, Any]] = (
            iter(metadatas) if metadatas is not None else itertools.repeat({})
        )
        ids_it: Iterator[str | None] = iter(ids) if ids is not None else itertools.repeat(None)
        while batch := list(itertools.islice(texts_it, self.embed_batch_size)):
            batch_meta = list(itertools.islice(metadatas_it, len(batch)))
            batch_ids = list(itertools.islice(ids_it, len(batch)))
            if len(batch_meta) != len(batch) or len(batch_ids) != len(batch):
                raise InvalidChunkError("expected as many metadatas and ids as texts")
            yield [i if i is not None else str(uuid.uuid4()) for i in batch_ids], batch, batch_meta
        if metadatas is not None and next(metadatas_it, None) is not None:
            raise InvalidChunkError("expected as many metadatas as texts, got more metadatas")

    def _chunk(
        self, chunk_id: str, text: str, metadata: dict[str, Any], vector: Sequence[float]
    ) -> Chunk:
        entity = metadata.get(self.entity_key) if self.entity_key else None
        return Chunk(
            chunk_id=chunk_id,
            entity_id=entity if isinstance(entity, str) else None,
            content=text,
            embedding=vector,
            metadata=metadata,
        )

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed ``texts`` in batches and upsert them in one transaction; return their ids."""
        written: list[str] = []

        def chunks() -> Iterator[Chunk]:
            for batch_ids, batch, batch_meta in self._prepare(texts, metadatas, ids):
                vectors = self.embedding.embed_documents(batch)
                written.extend(batch_ids)
                yield from map(self._chunk, batch_ids, batch, batch_meta, vectors)

        self.store.upsert(chunks(), batch_size=self.embed_batch_size)
        return written

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_texts`: embedding batches stream into one transaction."""
        written: list[str] = []

        async def chunks() -> AsyncIterator[Chunk]:
            for batch_ids, batch, batch_meta in self._prepare(texts, metadatas, ids):
                vectors = await self.embedding.aembed_documents(batch)
                written.extend(batch_ids)
                for chunk in map(self._chunk, batch_ids, batch, batch_meta, vectors):
                    yield chunk

        await self.store.aupsert(chunks(), batch_size=self.embed_batch_size)
        return written

    def _given(
        self,
        texts: Iterable[str],
        embeddings: Iterable[Sequence[float]],
        metadatas: list[dict[str, Any]] | None,
        ids: list[str] | None,
        written: list[str],
    ) -> Iterator[Chunk]:
        vectors = iter(embeddings)
        for batch_ids, batch, batch_meta in self._prepare(texts, metadatas, ids):
            written.extend(batch_ids)
            for chunk_id, text, meta in zip(batch_ids, batch, batch_meta, strict=True):
                vector = next(vectors, None)
                if vector is None:
                    raise InvalidChunkError("expected as many embeddings as texts, got fewer")
                yield self._chunk(chunk_id, text, meta, vector)

    def add_embeddings(
        self,
        texts: Iterable[str],
        embeddings: Iterable[Sequence[float]],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
    ) -> list[str]:
        """Add texts with precomputed vectors: no embedding call, streamed through COPY."""
        written: list[str] = []
        # Nothing to embed, so the store's own (larger) statement batches apply.
        self.store.upsert(self._given(texts, embeddings, metadatas, ids, written))
        return written

    async def aadd_embeddings(
        self,
        texts: Iterable[str],
        embeddings: Iterable[Sequence[float]],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
    ) -> list[str]:
        """Async :meth:`add_embeddings`."""
        written: list[str] = []
        await self.store.aupsert(self._given(texts, embeddings, metadatas, ids, written))
        return written

    def delete(
        self, ids: list[str] | None = None, *, filter: Filter | None = None, **kwargs: Any
    ) -> bool:
        """Delete by ids, by metadata filter, or chunks matching both; missing ids are ignored.

        One statement in one transaction; a bad filter raises before anything is deleted.
        ``ids=[]`` deletes nothing (an empty allow-list allows nothing), with a filter too.
        """
        self.store.delete_where(_deletion(ids, filter))
        return True

    async def adelete(
        self, ids: list[str] | None = None, *, filter: Filter | None = None, **kwargs: Any
    ) -> bool:
        """Async :meth:`delete`."""
        await self.store.adelete_where(_deletion(ids, filter))
        return True


def _deletion(ids: Sequence[str] | None, filter: Filter | None) -> Filter:
    """The one filter a ``delete(ids, filter)`` call deletes by."""
    if ids is None and not filter:
        raise InvalidChunkError("expected ids or a filter; use store.clear() to delete everything")
    if isinstance(ids, str):
        raise InvalidChunkError(f"expected a list of ids, got the string {ids!r}")
    parts = [] if ids is None else [{"chunk_id": {"$in": list(ids)}}]
    return {"$and": [*parts, filter]} if filter else parts[0]
