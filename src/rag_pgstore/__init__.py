"""Keep a RAG system's chunks in PostgreSQL + pgvector.

>>> from rag_pgstore import ChunkStore, Chunk
>>> store = ChunkStore.from_url(None, collection="docs", dim=384)  # embedded local Postgres
"""

from rag_pgstore.errors import (
    CollectionNameError,
    CollectionNotFoundError,
    DatabaseError,
    DatabaseUnavailableError,
    DimensionError,
    EmbeddedServerError,
    EmbeddingError,
    FilterError,
    InvalidChunkError,
    InvalidInputError,
    MissingDependencyError,
    QueryTimeoutError,
    RagPgStoreError,
    SchemaError,
    UnsupportedError,
)
from rag_pgstore.replicas import Replica
from rag_pgstore.store import ChunkStore
from rag_pgstore.types import (
    Chunk,
    CollectionInfo,
    CollectionSummary,
    Distance,
    Filter,
    Fusion,
    HnswIndex,
    HybridOptions,
    HybridSizes,
    IvfflatIndex,
    KeywordSearch,
    ScoredChunk,
    SearchTuning,
    StoredChunk,
    TextMode,
)

__all__ = [
    "Chunk",
    "ChunkStore",
    "CollectionInfo",
    "CollectionNameError",
    "CollectionNotFoundError",
    "CollectionSummary",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DimensionError",
    "Distance",
    "EmbeddedServerError",
    "EmbeddingError",
    "Filter",
    "FilterError",
    "Fusion",
    "HnswIndex",
    "HybridOptions",
    "HybridSizes",
    "InvalidChunkError",
    "InvalidInputError",
    "IvfflatIndex",
    "KeywordSearch",
    "MissingDependencyError",
    "QueryTimeoutError",
    "RagPgStoreError",
    "Replica",
    "SchemaError",
    "ScoredChunk",
    "SearchTuning",
    "StoredChunk",
    "TextMode",
    "UnsupportedError",
]
