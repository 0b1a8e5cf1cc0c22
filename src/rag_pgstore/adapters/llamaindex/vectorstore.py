"""LlamaIndex ``BasePydanticVectorStore`` over a :class:`rag_pgstore.ChunkStore`.

A translator only: nodes become chunks, ``VectorStoreQuery`` becomes a core search, and every
statement is the core store's (``pip install 'rag-pgstore[llamaindex]'``).

Mapping: ``node_id`` is the ``chunk_id``; ``ref_doc_id`` is the indexed ``entity_id`` column;
the text is ``content``; ``node.metadata`` is the chunk's metadata, exactly. What LlamaIndex
needs to rebuild the node (its type and relationships, from ``node_to_metadata_dict``) goes to
the chunk's ``adapter_data``, never into the metadata users filter and read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import (
    BaseNode,
    MetadataMode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from rag_pgstore.adapters.llamaindex.filters import translate
from rag_pgstore.errors import InvalidInputError, UnsupportedError
from rag_pgstore.ops.writes import DEFAULT_BATCH
from rag_pgstore.schema import Collection
from rag_pgstore.sql.filters import compile_filter
from rag_pgstore.store import ChunkStore
from rag_pgstore.types import Chunk, HybridOptions, ScoredChunk, StoredChunk

__all__ = ["LlamaIndexVectorStore"]

_BOOKKEEPING = ("_node_content", "_node_type")
# Left out of the node's JSON (see _bookkeeping); what LlamaIndex blanks is put back blank.
_LEFT_OUT = {"embedding", "metadata", "text", "text_resource"}
DEFAULT_MMR_PREFETCH = 20


class LlamaIndexVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store whose nodes live in a rag_pgstore collection.

    >>> vector_store = LlamaIndexVectorStore(store=store)
    >>> index = VectorStoreIndex.from_vector_store(vector_store, embed_model=embed_model)
    >>> index.as_query_engine(vector_store_query_mode="hybrid").query("...")
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    flat_metadata: bool = False

    _store: ChunkStore = PrivateAttr()

    def __init__(self, store: ChunkStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store = store

    @classmethod
    def from_url(
        cls, url: str | None, *, collection: str, dim: int, **options: Any
    ) -> LlamaIndexVectorStore:
        """Open (creating if needed) a collection; ``None`` is the embedded local Postgres."""
        return cls(ChunkStore.from_url(url, collection=collection, dim=dim, **options))

    @classmethod
    def class_name(cls) -> str:
        return "RagPgStoreVectorStore"

    @property
    def client(self) -> ChunkStore:
        """The core store: use it for what LlamaIndex has no word for (indexes, tuning)."""
        return self._store

    # -- writing -------------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Insert or replace nodes by id, in one transaction.

        Up to one write batch of nodes (5,000) is converted and checked before the
        transaction begins, so it can be retried whole; more stream through COPY, each batch
        converted while the one before is written.
        """
        self._store.upsert(_chunks(nodes))
        return [n.node_id for n in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        await self._store.aupsert(_chunks(nodes))
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of a source document (an index scan on ``entity_id``)."""
        self._store.delete_entities([ref_doc_id])

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await self._store.adelete_entities([ref_doc_id])

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id and/or filter (both must match when both are given).

        ``node_ids=[]`` deletes nothing. One statement, in one transaction.
        """
        where = _deletion(self._store.collection, node_ids, filters)
        if where is not None:
            self._store.delete_where(where)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        where = _deletion(self._store.collection, node_ids, filters)
        if where is not None:
            await self._store.adelete_where(where)

    def clear(self) -> None:
        self._store.clear()

    async def aclear(self) -> None:
        await self._store.aclear()

    # -- reading -------------------------------------------------------------------------------

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return [
            to_node(c)
            for c in self._store.get_where(_restrict(translate(filters), node_ids=node_ids))
        ]

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return [
            to_node(c)
            for c in await self._store.aget_where(_restrict(translate(filters), node_ids=node_ids))
        ]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Answer ``query`` field by field; see the module docs for each mode."""
        run, _ = _search(self._store, query, kwargs)
        return _result(run())

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        _, run = _search(self._store, query, kwargs)
        return _result(await run())


Hits = list[ScoredChunk]


def _search(
    store: ChunkStore, query: VectorStoreQuery, kwargs: dict[str, Any]
) -> tuple[Callable[[], Hits], Callable[[], Awaitable[Hits]]]:
    """The store call that answers ``query``, sync and async: the same arguments for both.

    Arguments are checked here, before either is called.
    """
    where = _restrict(translate(query.filters), node_ids=query.node_ids, doc_ids=query.doc_ids)
    k = query.similarity_top_k
    mode = query.mode
    if mode in (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE):
        text, size = _text(query), query.sparse_top_k or k
        return (
            lambda: store.text_search(text, k=size, filter=where),
            lambda: store.atext_search(text, k=size, filter=where),
        )
    vector = _vector(query)
    if mode is VectorStoreQueryMode.DEFAULT:
        return (
            lambda: store.search(vector, k=k, filter=where),
            lambda: store.asearch(vector, k=k, filter=where),
        )
    if mode is VectorStoreQueryMode.HYBRID:
        # Candidate pools default to the core's (max(4k, 40) per side): min-max fusion over a
        # handful of candidates would push every second-best hit to 0.
        options = HybridOptions(
            vector_weight=0.5 if query.alpha is None else query.alpha,
            text_k=query.sparse_top_k,
        )
        text, size = _text(query), query.hybrid_top_k or k
        return (
            lambda: store.hybrid_search(vector, text, k=size, filter=where, options=options),
            lambda: store.ahybrid_search(vector, text, k=size, filter=where, options=options),
        )
    if mode is VectorStoreQueryMode.MMR:
        fetch_k, mult = _mmr_options(query, kwargs)
        return (
            lambda: store.mmr_search(vector, k=k, fetch_k=fetch_k, lambda_mult=mult, filter=where),
            lambda: store.ammr_search(vector, k=k, fetch_k=fetch_k, lambda_mult=mult, filter=where),
        )
    raise UnsupportedError(
        f"expected a query mode among default, text_search, sparse, hybrid, mmr; got {mode.value!r}"
    )


def _mmr_options(query: VectorStoreQuery, kwargs: dict[str, Any]) -> tuple[int, float]:
    """``fetch_k`` and ``lambda_mult`` from the query and its ``vector_store_kwargs``.

    As in llama-index-vector-stores-postgres: ``mmr_threshold`` may come with the query or as a
    keyword (the query's wins), ``mmr_prefetch_k`` and ``mmr_prefetch_factor`` exclude each
    other, and at least ``similarity_top_k`` candidates are fetched.
    """
    k = query.similarity_top_k
    factor, prefetch_k = kwargs.get("mmr_prefetch_factor"), kwargs.get("mmr_prefetch_k")
    if factor is not None and prefetch_k is not None:
        raise InvalidInputError(
            "expected mmr_prefetch_k or mmr_prefetch_factor, got both; pass one of them"
        )
    try:
        if prefetch_k is not None:
            fetch_k = int(prefetch_k)
        elif factor is not None:
            fetch_k = int(float(factor) * k)
        else:
            fetch_k = DEFAULT_MMR_PREFETCH
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"expected a number for mmr_prefetch_k / mmr_prefetch_factor, got "
            f"{prefetch_k if prefetch_k is not None else factor!r}"
        ) from None
    threshold = query.mmr_threshold
    if threshold is None:
        threshold = kwargs.get("mmr_threshold")
    if threshold is None:
        return max(fetch_k, k), 0.5
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidInputError(f"expected mmr_threshold to be a number, got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInputError(f"expected 0 <= mmr_threshold <= 1, got {threshold}")
    return max(fetch_k, k), float(threshold)


def _vector(query: VectorStoreQuery) -> list[float]:
    if query.query_embedding is None:
        raise InvalidInputError(
            f"expected a query_embedding for {query.mode.value!r} queries, got None"
        )
    return query.query_embedding


def _text(query: VectorStoreQuery) -> str:
    if not query.query_str:
        raise InvalidInputError(
            f"expected a query_str for {query.mode.value!r} queries, got {query.query_str!r}"
        )
    return query.query_str


def _restrict(
    where: dict[str, Any] | None,
    *,
    node_ids: list[str] | None = None,
    doc_ids: list[str] | None = None,
) -> dict[str, Any] | None:
    """Add id restrictions.

    ``node_ids=[]`` is no restriction: LlamaIndex's retriever passes it for "any node". Any
    other empty allow-list allows nothing, so ``doc_ids=[]`` matches no document.
    """
    parts = [where] if where else []
    if node_ids:
        parts.append({"chunk_id": {"$in": list(node_ids)}})
    if doc_ids is not None:
        parts.append({"entity_id": {"$in": list(doc_ids)}})
    return {"$and": parts} if parts else None


def _deletion(
    c: Collection, node_ids: list[str] | None, filters: MetadataFilters | None
) -> dict[str, Any] | None:
    """The filter of a ``delete_nodes`` call; ``None`` when it deletes nothing (``node_ids=[]``).

    Checked whole before anything is deleted.
    """
    where = translate(filters, strict=True)
    if node_ids is not None and not node_ids:
        if where is not None:
            compile_filter(where, c.table)  # a bad filter still fails loudly
        return None
    where = _restrict(where, node_ids=node_ids)
    if where is None:
        raise InvalidInputError("expected node_ids or filters; use clear() to delete every node")
    return where


def _result(hits: list[ScoredChunk]) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(
        nodes=[to_node(h.chunk) for h in hits],
        similarities=[h.score for h in hits],
        ids=[h.chunk.chunk_id for h in hits],
    )


def _chunks(nodes: Sequence[BaseNode]) -> list[Chunk] | Iterator[Chunk]:
    if isinstance(nodes, Sequence) and len(nodes) <= DEFAULT_BATCH:
        return [to_chunk(n) for n in nodes]
    return map(to_chunk, nodes)


def to_chunk(node: BaseNode) -> Chunk:
    """A node as a chunk: text, user metadata, and LlamaIndex's bookkeeping kept apart."""
    embedding = node.embedding
    if embedding is None:
        raise InvalidInputError(
            f"expected node {node.node_id!r} to carry an embedding, got None; embed it first "
            "(VectorStoreIndex does, or set node.embedding = embed_model.get_text_embedding(...))"
        )
    return Chunk(
        chunk_id=node.node_id,
        entity_id=node.ref_doc_id,
        content=node.get_content(metadata_mode=MetadataMode.NONE),
        embedding=embedding,
        metadata=node.metadata,
        adapter_data=_bookkeeping(node),
    )


def _bookkeeping(node: BaseNode) -> dict[str, str]:
    """What ``node_to_metadata_dict(node, remove_text=True)`` keeps of a node.

    The same JSON value LlamaIndex writes (keys in another order), less the user metadata
    (stored in its own column), the text (in ``content``) and the vector (which it would dump
    float by float only to throw away), made by pydantic's serializer straight to JSON:
    building the dictionaries first, on a heap that holds the caller's nodes, cost most of a
    write in garbage collection. (pydantic writes a NaN in a relationship's metadata as null.)
    """
    rest = node.model_dump_json(exclude=_LEFT_OUT)  # never "{}": class_name is always in it
    text = '"text":"",' if "text" in type(node).model_fields else ""
    content = '{"embedding":null,"metadata":{},' + text + rest[1:]
    return {"_node_content": content, "_node_type": node.class_name()}


def to_node(chunk: StoredChunk) -> BaseNode:
    """Rebuild the node LlamaIndex stored, or a ``TextNode`` for chunks written elsewhere."""
    if chunk.adapter_data and all(key in chunk.adapter_data for key in _BOOKKEEPING):
        node = metadata_dict_to_node(dict(chunk.adapter_data), text=chunk.content)
        node.metadata = dict(chunk.metadata)
        return node
    relationships = {}
    if chunk.entity_id != chunk.chunk_id:
        relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=chunk.entity_id)
    return TextNode(
        id_=chunk.chunk_id,
        text=chunk.content,
        metadata=dict(chunk.metadata),
        relationships=relationships,
    )
