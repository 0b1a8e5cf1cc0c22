"""Deterministic LangChain embeddings for examples and tests: no model, no network."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from rag_pgstore.pipeline.hashing import hash_embedding

__all__ = ["HashEmbeddings"]


class HashEmbeddings(Embeddings):
    """LangChain face of :func:`rag_pgstore.hashing.hash_embedding`: deterministic, no model."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [hash_embedding(text, self.dim) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
