"""Documents -> chunks -> embeddings -> store, incrementally and resumably.

>>> from rag_pgstore.pipeline import Document, Pipeline, hash_embedder
>>> Pipeline(store, hash_embedder(store.collection.dim)).ingest([Document("a.md", text)])

``ingest`` holds the pipeline, ``batches`` the documents it takes and how they are gathered
into batches, ``embedders`` the models behind one interface, ``hashing`` the deterministic
embedding for tests and demos.
"""

from rag_pgstore.pipeline.batches import Document
from rag_pgstore.pipeline.embedders import Embedder, as_embedder, hash_embedder, local_embedder
from rag_pgstore.pipeline.hashing import hash_embedding
from rag_pgstore.pipeline.ingest import IngestReport, Pipeline

__all__ = [
    "Document",
    "Embedder",
    "IngestReport",
    "Pipeline",
    "as_embedder",
    "hash_embedder",
    "hash_embedding",
    "local_embedder",
]
