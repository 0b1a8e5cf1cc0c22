"""A LangChain retriever that adds ``search_type="hybrid"`` to the usual three."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStoreRetriever

if TYPE_CHECKING:
    from rag_pgstore.adapters.langchain.vectorstore import LangChainVectorStore

__all__ = ["PgStoreRetriever"]


class PgStoreRetriever(VectorStoreRetriever):
    """LangChain's vector-store retriever with one more ``search_type``: ``"hybrid"``."""

    allowed_search_types: ClassVar[tuple[str, ...]] = (
        "similarity",
        "similarity_score_threshold",
        "mmr",
        "hybrid",
    )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type == "hybrid":
            store = cast("LangChainVectorStore", self.vectorstore)
            return store.hybrid_search(query, **{**self.search_kwargs, **kwargs})
        return super()._get_relevant_documents(query, run_manager=run_manager, **kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type == "hybrid":
            store = cast("LangChainVectorStore", self.vectorstore)
            return await store.ahybrid_search(query, **{**self.search_kwargs, **kwargs})
        return await super()._aget_relevant_documents(query, run_manager=run_manager, **kwargs)
