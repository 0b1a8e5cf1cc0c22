"""Create a collection, store a few texts, and search them with a filter.

Runs on the embedded local PostgreSQL unless DATABASE_URL names a server:

    python examples/quickstart.py
"""

from __future__ import annotations

import os

from rag_pgstore import Chunk, ChunkStore
from rag_pgstore.pipeline.hashing import hash_embedding

DIM = 256
TEXTS = [
    ("pg-intro", "PostgreSQL is a relational database with transactions and SQL.", "databases"),
    ("pgvector", "pgvector adds vector similarity search to PostgreSQL.", "databases"),
    ("hnsw", "HNSW indexes find approximate nearest neighbours quickly.", "search"),
    ("bm25", "Full-text search ranks documents by the words they share with a query.", "search"),
    ("bread", "Sourdough bread needs flour, water, salt and patience.", "cooking"),
]


def main() -> None:
    store = ChunkStore.from_url(os.environ.get("DATABASE_URL"), collection="quickstart", dim=DIM)
    store.upsert(
        Chunk(
            chunk_id=cid,
            content=text,
            embedding=hash_embedding(text, DIM),
            metadata={"topic": topic},
        )
        for cid, text, topic in TEXTS
    )
    print(f"{store.count()} chunks in {store!r}")
    for question, filter in [
        ("vector search in PostgreSQL", None),
        ("how do search indexes rank documents", {"topic": {"$in": ["search", "databases"]}}),
        ("what goes into bread", {"topic": "cooking"}),
    ]:
        print(f"\n? {question}   filter={filter}")
        for hit in store.search(hash_embedding(question, DIM), k=2, filter=filter):
            print(f"  {hit.score:.3f}  {hit.chunk.chunk_id:<9} {hit.chunk.content}")
    store.close()


if __name__ == "__main__":
    main()
