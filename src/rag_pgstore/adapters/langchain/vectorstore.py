"""LangChain ``VectorStore`` over a :class:`rag_pgstore.ChunkStore`.

A translator only: documents become chunks and hits become documents; every query and write is
the core store's (``pip install 'rag-pgstore[langchain]'``).

Mapping: ``Document.id`` is the ``chunk_id``; ``Document.metadata`` is stored as the chunk's
metadata and comes back exactly as given (keys named ``id`` or ``entity_id`` included: they
live in the JSON, not in columns). ``entity_id`` is taken from the metadata key ``entity_key``
(``"source"`` by default) when it holds a string, else it is the chunk id, so
``delete(filter={"entity_id": ...})`` removes every chunk of a source document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from rag_pgstore.adapters.langchain import documents
from rag_pgstore.adapters.langchain.documents import in_order, to_document
from rag_pgstore.adapters.langchain.retriever import PgStoreRetriever
from rag_pgstore.codec import compact_vectors
from rag_pgstore.errors import InvalidInputError
from rag_pgstore.ops.writes import DEFAULT_BATCH
from rag_pgstore.store import ChunkStore
from rag_pgstore.types import Chunk, Filter, HybridOptions

__all__ = ["LangChainVectorStore", "to_document"]


class LangChainVectorStore(VectorStore):
    """A LangChain vector store whose chunks live in a rag_pgstore collection.

    >>> vs = LangChainVectorStore(store, embedding=embeddings)
    >>> vs.add_texts(["..."], metadatas=[{"source": "a.md"}])
    >>> vs.as_retriever(search_type="hybrid", search_kwargs={"k": 5}).invoke("question")
    """

    def __init__(
        self,
        store: ChunkStore,
        embedding: Embeddings,
        *,
        entity_key: str | None = "source",
        embed_batch_size: int = 512,
    ) -> None:
        if embed_batch_size < 1:
            raise InvalidInputError(f"expected embed_batch_size >= 1, got {embed_batch_size}")
        self.store = store
        self.embedding = embedding
        self.entity_key = entity_key
        self.embed_batch_size = embed_batch_size

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    # -- reading -------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str]) -> list[Document]:
        """Documents for the ids that exist, in the order asked (``ids=`` works too)."""
        return in_order(ids, self.store.get(ids))

    async def aget_by_ids(self, ids: Sequence[str]) -> list[Document]:
        """Async :meth:`get_by_ids`."""
        return in_order(ids, await self.store.aget(ids))

    def similarity_search(
        self, query: str, k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[Document]:
        return [
            doc for doc, _ in self.similarity_search_with_score(query, k, filter=filter, **kwargs)
        ]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[Document]:
        return [
            doc
            for doc, _ in await self.asimilarity_search_with_score(
                query, k, filter=filter, **kwargs
            )
        ]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with the *distance* the operator returned (lower is closer)."""
        return self.similarity_search_with_score_by_vector(
            self.embedding.embed_query(query), k, filter, **kwargs
        )

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        vector = await self.embedding.aembed_query(query)
        return await self.asimilarity_search_with_score_by_vector(vector, k, filter, **kwargs)

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[Document]:
        return [
            doc
            for doc, _ in self.similarity_search_with_score_by_vector(
                embedding, k, filter, **kwargs
            )
        ]

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[Document]:
        hits = await self.asimilarity_search_with_score_by_vector(embedding, k, filter, **kwargs)
        return [doc for doc, _ in hits]

    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float], k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        hits = self.store.search(embedding, k=k, filter=filter, **documents.search_options(kwargs))
        return [(to_document(hit), documents.distance(hit)) for hit in hits]

    async def asimilarity_search_with_score_by_vector(
        self, embedding: Sequence[float], k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        hits = await self.store.asearch(
            embedding, k=k, filter=filter, **documents.search_options(kwargs)
        )
        return [(to_document(hit), documents.distance(hit)) for hit in hits]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """The core's score for the collection's distance: [0, 1], never inverted."""
        return self.store.collection.distance.score

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        vector = self.embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter, **kwargs
        )

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        vector = await self.embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter, **kwargs
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        hits = self.store.mmr_search(
            embedding, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult, filter=filter
        )
        return [to_document(hit) for hit in hits]

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        hits = await self.store.ammr_search(
            embedding, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult, filter=filter
        )
        return [to_document(hit) for hit in hits]

    def hybrid_search_with_score(
        self, query: str, k: int = 4, filter: Filter | None = None, **options: Any
    ) -> list[tuple[Document, float]]:
        """Full-text and vector search fused in one statement; scores are the fused ones.

        ``options`` are :class:`rag_pgstore.HybridOptions` fields (``vector_weight``,
        ``fusion``, ``text_mode``, ...).
        """
        hits = self.store.hybrid_search(
            self.embedding.embed_query(query),
            query,
            k=k,
            filter=filter,
            options=HybridOptions(**options),
        )
        return [(to_document(hit), hit.score) for hit in hits]

    async def ahybrid_search_with_score(
        self, query: str, k: int = 4, filter: Filter | None = None, **options: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`hybrid_search_with_score`."""
        vector = await self.embedding.aembed_query(query)
        hits = await self.store.ahybrid_search(
            vector, query, k=k, filter=filter, options=HybridOptions(**options)
        )
        return [(to_document(hit), hit.score) for hit in hits]

    def hybrid_search(
        self, query: str, k: int = 4, filter: Filter | None = None, **options: Any
    ) -> list[Document]:
        """Documents of :meth:`hybrid_search_with_score`."""
        return [doc for doc, _ in self.hybrid_search_with_score(query, k, filter, **options)]

    async def ahybrid_search(
        self, query: str, k: int = 4, filter: Filter | None = None, **options: Any
    ) -> list[Document]:
        """Async :meth:`hybrid_search`."""
        return [doc for doc, _ in await self.ahybrid_search_with_score(query, k, filter, **options)]

    def search(self, query: str, search_type: str, **kwargs: Any) -> list[Document]:
        """LangChain's search types, plus ``"hybrid"``."""
        if search_type == "hybrid":
            return self.hybrid_search(query, **kwargs)
        return super().search(query, search_type, **kwargs)

    async def asearch(self, query: str, search_type: str, **kwargs: Any) -> list[Document]:
        if search_type == "hybrid":
            return await self.ahybrid_search(query, **kwargs)
        return await super().asearch(query, search_type, **kwargs)

    def as_retriever(self, **kwargs: Any) -> PgStoreRetriever:
        """A retriever; ``search_type`` may also be ``"hybrid"``."""
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return PgStoreRetriever(vectorstore=self, tags=tags, **kwargs)

    # -- writing -------------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed ``texts`` ``embed_batch_size`` at a time and stream them into one transaction.

        100k texts never form one statement: they are written by COPY in the store's batches
        (5,000 chunks), the next batch embedded while the one before is written, so a few
        batches of vectors are in memory at most. Returns the ids, generated where missing.
        A list of up to 5,000 texts is embedded before the transaction begins (so it can be
        retried); more, or an iterator, are embedded as they stream, inside it, and the
        collection's other writers wait for a stream of several batches meanwhile (see the
        guide's *Concurrent writers*).
        """
        written: list[str] = []

        def chunks() -> Iterator[Chunk]:
            for batch_ids, batch, batch_meta in self._batches(texts, metadatas, ids):
                vectors = compact_vectors(self.embedding.embed_documents(batch))
                written.extend(batch_ids)
                yield from map(self._chunk, batch_ids, batch, batch_meta, vectors)

        if self._one_batch(texts):
            self.store.upsert(list(chunks()))
        else:
            self.store.upsert(chunks())
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
            for batch_ids, batch, batch_meta in self._batches(texts, metadatas, ids):
                vectors = compact_vectors(await self.embedding.aembed_documents(batch))
                written.extend(batch_ids)
                for chunk in map(self._chunk, batch_ids, batch, batch_meta, vectors):
                    yield chunk

        if self._one_batch(texts):
            await self.store.aupsert([chunk async for chunk in chunks()])
        else:
            await self.store.aupsert(chunks())
        return written

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
        parts = self._batches(texts, metadatas, ids)
        self.store.upsert(documents.with_vectors(self.entity_key, parts, embeddings, written))
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
        parts = self._batches(texts, metadatas, ids)
        await self.store.aupsert(
            documents.with_vectors(self.entity_key, parts, embeddings, written)
        )
        return written

    def delete(
        self, ids: list[str] | None = None, *, filter: Filter | None = None, **kwargs: Any
    ) -> bool:
        """Delete by ids, by metadata filter, or chunks matching both; missing ids are ignored.

        One statement in one transaction; a bad filter raises before anything is deleted.
        ``ids=[]`` deletes nothing (an empty allow-list allows nothing), with a filter too.
        """
        self.store.delete_where(documents.deletion(ids, filter))
        return True

    async def adelete(
        self, ids: list[str] | None = None, *, filter: Filter | None = None, **kwargs: Any
    ) -> bool:
        """Async :meth:`delete`."""
        await self.store.adelete_where(documents.deletion(ids, filter))
        return True

    def _batches(
        self,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any]] | None,
        ids: Sequence[str | None] | None,
    ) -> Iterator[documents.Batch]:
        return documents.batches(texts, metadatas, ids, self.embed_batch_size)

    def _one_batch(self, texts: Iterable[str]) -> bool:
        """Texts that make one write batch: embedded first, then written as a list (checked
        whole, and retried whole if PostgreSQL aborts the transaction)."""
        return isinstance(texts, Sequence) and len(texts) <= DEFAULT_BATCH

    def _chunk(
        self, chunk_id: str, text: str, metadata: dict[str, Any], vector: Sequence[float]
    ) -> Chunk:
        return documents.to_chunk(self.entity_key, chunk_id, text, metadata, vector)

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        url: str | None = None,
        collection: str = "langchain",
        store: ChunkStore | None = None,
        dim: int | None = None,
        **kwargs: Any,
    ) -> LangChainVectorStore:
        """Create (or open) a collection and add ``texts`` to it.

        With neither ``store`` nor ``url``, the embedded local Postgres is used. ``dim`` is
        found by embedding one probe text when not given. Other keyword arguments go to
        :meth:`ChunkStore.from_url` (``distance``, ``schema``, ``text_config``, ...).
        """
        if store is None:
            size = dim or len(embedding.embed_query("dimension probe"))
            store = ChunkStore.from_url(url, collection=collection, dim=size, **kwargs)
        vs = cls(store, embedding)
        vs.add_texts(texts, metadatas, ids=ids)
        return vs

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        url: str | None = None,
        collection: str = "langchain",
        store: ChunkStore | None = None,
        dim: int | None = None,
        **kwargs: Any,
    ) -> LangChainVectorStore:
        """Async :meth:`from_texts`."""
        if store is None:
            size = dim or len(await embedding.aembed_query("dimension probe"))
            store = await ChunkStore.afrom_url(url, collection=collection, dim=size, **kwargs)
        vs = cls(store, embedding)
        await vs.aadd_texts(texts, metadatas, ids=ids)
        return vs
