"""The reads and searches of :class:`~rag_pgstore.ChunkStore`, kept apart from its lifecycle
and writes. Each method is a line or two over a plan from :mod:`rag_pgstore.reads`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from rag_pgstore import reads
from rag_pgstore.hybrid import HybridOptions, TextMode
from rag_pgstore.records import ScoredChunk, SearchTuning, StoredChunk

if TYPE_CHECKING:
    from rag_pgstore.schema import Collection
    from rag_pgstore.steps import Plan

__all__ = ["SearchMethods"]

T = TypeVar("T")
Filter = Mapping[str, Any]


class SearchMethods:
    """Get, count and search: the read side of a chunk store."""

    if TYPE_CHECKING:
        collection: Collection

        def run_plan(self, plan: Plan[T]) -> T: ...

        async def arun_plan(self, plan: Plan[T]) -> T: ...

    def get(self, ids: Iterable[str], *, with_embeddings: bool = False) -> list[StoredChunk]:
        """Fetch chunks by id, ordered by (entity_id, chunk_index); missing ids are skipped."""
        return self.run_plan(reads.get(self.collection, ids, with_embeddings=with_embeddings))

    async def aget(self, ids: Iterable[str], *, with_embeddings: bool = False) -> list[StoredChunk]:
        """Async :meth:`get`."""
        return await self.arun_plan(
            reads.get(self.collection, ids, with_embeddings=with_embeddings)
        )

    def get_where(
        self,
        filter: Filter | None = None,
        *,
        limit: int | None = None,
        with_embeddings: bool = False,
    ) -> list[StoredChunk]:
        """Fetch the chunks matching ``filter``, ordered by (entity_id, chunk_index)."""
        return self.run_plan(
            reads.get_where(self.collection, filter, limit=limit, with_embeddings=with_embeddings)
        )

    async def aget_where(
        self,
        filter: Filter | None = None,
        *,
        limit: int | None = None,
        with_embeddings: bool = False,
    ) -> list[StoredChunk]:
        """Async :meth:`get_where`."""
        return await self.arun_plan(
            reads.get_where(self.collection, filter, limit=limit, with_embeddings=with_embeddings)
        )

    def count(self, filter: Filter | None = None) -> int:
        """Count chunks, optionally only those matching ``filter``."""
        return self.run_plan(reads.count(self.collection, filter))

    async def acount(self, filter: Filter | None = None) -> int:
        """Async :meth:`count`."""
        return await self.arun_plan(reads.count(self.collection, filter))

    def search(
        self,
        query: Sequence[float],
        *,
        k: int = 4,
        filter: Filter | None = None,
        offset: int = 0,
        min_score: float | None = None,
        tuning: SearchTuning | None = None,
        with_embeddings: bool = False,
    ) -> list[ScoredChunk]:
        """The ``k`` chunks nearest to ``query`` (after skipping ``offset``), nearest first.

        ``filter`` is a metadata filter (see ``rag_pgstore.filters``); ``min_score`` drops hits
        whose relevance score (:meth:`Distance.score`) is lower; ``tuning`` sets per-query index
        parameters.
        """
        return self.run_plan(
            reads.search(
                self.collection,
                query,
                k=k,
                filter=filter,
                offset=offset,
                min_score=min_score,
                tuning=tuning,
                with_embeddings=with_embeddings,
            )
        )

    async def asearch(
        self,
        query: Sequence[float],
        *,
        k: int = 4,
        filter: Filter | None = None,
        offset: int = 0,
        min_score: float | None = None,
        tuning: SearchTuning | None = None,
        with_embeddings: bool = False,
    ) -> list[ScoredChunk]:
        """Async :meth:`search`."""
        return await self.arun_plan(
            reads.search(
                self.collection,
                query,
                k=k,
                filter=filter,
                offset=offset,
                min_score=min_score,
                tuning=tuning,
                with_embeddings=with_embeddings,
            )
        )

    def search_like(
        self,
        chunk_id: str,
        *,
        k: int = 4,
        filter: Filter | None = None,
        tuning: SearchTuning | None = None,
    ) -> list[ScoredChunk]:
        """More like this: the ``k`` chunks nearest to a stored chunk, excluding it."""
        return self.run_plan(
            reads.search_like(self.collection, chunk_id, k=k, filter=filter, tuning=tuning)
        )

    async def asearch_like(
        self,
        chunk_id: str,
        *,
        k: int = 4,
        filter: Filter | None = None,
        tuning: SearchTuning | None = None,
    ) -> list[ScoredChunk]:
        """Async :meth:`search_like`."""
        return await self.arun_plan(
            reads.search_like(self.collection, chunk_id, k=k, filter=filter, tuning=tuning)
        )

    def mmr_search(
        self,
        query: Sequence[float],
        *,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter | None = None,
        tuning: SearchTuning | None = None,
    ) -> list[ScoredChunk]:
        """Pick ``k`` diverse chunks from the ``fetch_k`` nearest by maximal marginal relevance.

        ``lambda_mult`` 1 ranks by relevance only, 0 by diversity only.
        """
        return self.run_plan(
            reads.mmr_search(
                self.collection,
                query,
                k=k,
                fetch_k=fetch_k,
                lambda_mult=lambda_mult,
                filter=filter,
                tuning=tuning,
            )
        )

    async def ammr_search(
        self,
        query: Sequence[float],
        *,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter | None = None,
        tuning: SearchTuning | None = None,
    ) -> list[ScoredChunk]:
        """Async :meth:`mmr_search`."""
        return await self.arun_plan(
            reads.mmr_search(
                self.collection,
                query,
                k=k,
                fetch_k=fetch_k,
                lambda_mult=lambda_mult,
                filter=filter,
                tuning=tuning,
            )
        )

    def hybrid_search(
        self,
        query: Sequence[float],
        text: str,
        *,
        k: int = 4,
        filter: Filter | None = None,
        options: HybridOptions | None = None,
        tuning: SearchTuning | None = None,
    ) -> list[ScoredChunk]:
        """Full-text search on ``text`` and vector search on ``query``, fused into one ranking.

        One statement does both searches and the fusion (reciprocal-rank by default); the
        filter applies to both. ``score`` is the fused score; ``distance`` is ``None`` for
        chunks only the text search found.
        """
        return self.run_plan(
            reads.hybrid_search(
                self.collection, query, text, k=k, filter=filter, options=options, tuning=tuning
            )
        )

    async def ahybrid_search(
        self,
        query: Sequence[float],
        text: str,
        *,
        k: int = 4,
        filter: Filter | None = None,
        options: HybridOptions | None = None,
        tuning: SearchTuning | None = None,
    ) -> list[ScoredChunk]:
        """Async :meth:`hybrid_search`."""
        return await self.arun_plan(
            reads.hybrid_search(
                self.collection, query, text, k=k, filter=filter, options=options, tuning=tuning
            )
        )

    def text_search(
        self, text: str, *, k: int = 4, filter: Filter | None = None, mode: TextMode = TextMode.ANY
    ) -> list[ScoredChunk]:
        """Full-text search alone (``ts_rank`` over the collection's text-search config)."""
        return self.run_plan(
            reads.text_search(self.collection, text, k=k, filter=filter, mode=mode)
        )

    async def atext_search(
        self, text: str, *, k: int = 4, filter: Filter | None = None, mode: TextMode = TextMode.ANY
    ) -> list[ScoredChunk]:
        """Async :meth:`text_search`."""
        return await self.arun_plan(
            reads.text_search(self.collection, text, k=k, filter=filter, mode=mode)
        )
