"""Deprecated alias of :mod:`rag_pgstore.pipeline.hashing`."""

from rag_pgstore.pipeline.hashing import hash_embedding

__all__ = ["hash_embedding"]
