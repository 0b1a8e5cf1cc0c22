"""Bring vectors from other stores in, without embedding anything again.

>>> from rag_pgstore.importers import import_chunks, langchain_pgvector
>>> report = import_chunks(store, langchain_pgvector(engine, "my_docs"))
>>> report.verified
True

Each source reads its rows in pages, in a stable order, as chunks (ids, texts, metadata,
vectors and the source document, mapped the way our adapters map them, so the frameworks
read them back as they read the original); :func:`import_chunks` writes page after page, each
in one transaction with its place in the source, so an interrupted import continues where
it stopped; at the end it reads both sides again and compares counts and a checksum over ids
and vectors. See docs/import.md.
"""

from rag_pgstore.importers.files import langchain_dump, llamaindex_persist_dir
from rag_pgstore.importers.run import ImportReport, import_chunks
from rag_pgstore.importers.tables import (
    langchain_pgvector,
    langchain_pgvectorstore,
    llamaindex_pgvector,
)

__all__ = [
    "ImportReport",
    "import_chunks",
    "langchain_dump",
    "langchain_pgvector",
    "langchain_pgvectorstore",
    "llamaindex_persist_dir",
    "llamaindex_pgvector",
]
