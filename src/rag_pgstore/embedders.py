"""Deprecated alias of :mod:`rag_pgstore.pipeline.embedders`."""

from rag_pgstore.pipeline.embedders import (
    LOCAL_DIM,
    LOCAL_MODEL,
    Embedder,
    as_embedder,
    hash_embedder,
    local_embedder,
)

__all__ = ["LOCAL_DIM", "LOCAL_MODEL", "Embedder", "as_embedder", "hash_embedder", "local_embedder"]
