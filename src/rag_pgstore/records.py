"""Deprecated alias of :mod:`rag_pgstore.types`, where every public value now lives."""

from rag_pgstore.types import (
    DEFAULT_EF_SEARCH,
    MAX_EF_SEARCH,
    Chunk,
    Distance,
    HnswIndex,
    IvfflatIndex,
    ScoredChunk,
    SearchTuning,
    StoredChunk,
    ef_search_for,
)

__all__ = [
    "DEFAULT_EF_SEARCH",
    "MAX_EF_SEARCH",
    "Chunk",
    "Distance",
    "HnswIndex",
    "IvfflatIndex",
    "ScoredChunk",
    "SearchTuning",
    "StoredChunk",
    "ef_search_for",
]
