"""Deterministic LlamaIndex embeddings for examples and tests: no model, no network."""

from __future__ import annotations

from llama_index.core.base.embeddings.base import BaseEmbedding

from rag_pgstore.pipeline.hashing import hash_embedding

__all__ = ["HashEmbedding"]


class HashEmbedding(BaseEmbedding):
    """LlamaIndex face of :func:`rag_pgstore.hashing.hash_embedding`."""

    dim: int = 256

    @classmethod
    def class_name(cls) -> str:
        return "RagPgStoreHashEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return hash_embedding(query, self.dim)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return hash_embedding(query, self.dim)

    def _get_text_embedding(self, text: str) -> list[float]:
        return hash_embedding(text, self.dim)
