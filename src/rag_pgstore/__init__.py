"""Keep a RAG system's chunks in PostgreSQL + pgvector.

>>> from rag_pgstore import ChunkStore, Chunk
>>> store = ChunkStore.from_url(None, collection="docs", dim=384)  # embedded local Postgres
"""

from rag_pgstore.errors import (
    CollectionNameError,
    DatabaseError,
    DatabaseUnavailableError,
    DimensionError,
    EmbeddedServerError,
    EmbeddingError,
    FilterError,
    InvalidChunkError,
    QueryTimeoutError,
    RagPgStoreError,
    SchemaError,
    UnsupportedError,
)
from rag_pgstore.hybrid import Fusion, HybridOptions, TextMode
from rag_pgstore.records import (
    Chunk,
    Distance,
    HnswIndex,
    IvfflatIndex,
    ScoredChunk,
    SearchTuning,
    StoredChunk,
)
from rag_pgstore.store import ChunkStore

__all__ = [
    "Chunk",
    "ChunkStore",
    "CollectionNameError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DimensionError",
    "Distance",
    "EmbeddedServerError",
    "EmbeddingError",
    "FilterError",
    "Fusion",
    "HnswIndex",
    "HybridOptions",
    "InvalidChunkError",
    "IvfflatIndex",
    "QueryTimeoutError",
    "RagPgStoreError",
    "SchemaError",
    "ScoredChunk",
    "SearchTuning",
    "StoredChunk",
    "TextMode",
    "UnsupportedError",
]
