"""Sources that are files: a LangChain ``InMemoryVectorStore.dump()`` file, and a LlamaIndex
``StorageContext.persist()`` directory (its ``SimpleVectorStore`` and docstore).

Both are read whole by their framework's own loader (they are one JSON document each), then
paged in the file's order; the key to continue after is a position.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_pgstore.errors import InvalidInputError, MissingDependencyError, SchemaError
from rag_pgstore.types import Chunk

__all__ = ["langchain_dump", "llamaindex_persist_dir"]


@dataclass(frozen=True)
class FilePage:
    chunks: list[Chunk]
    last: str


@dataclass(frozen=True)
class _FileSource:
    name: str
    ids: Sequence[str] = field(repr=False)
    to_chunk: Callable[[str], Chunk] = field(repr=False)

    def pages(self, after: str | None, size: int) -> Iterator[FilePage]:
        start = 0 if after is None else int(after) + 1
        for first in range(start, len(self.ids), size):
            part = self.ids[first : first + size]
            yield FilePage([self.to_chunk(i) for i in part], str(first + len(part) - 1))


def langchain_dump(
    path: str | os.PathLike[str], *, entity_key: str | None = "source"
) -> _FileSource:
    """A file written by LangChain's ``InMemoryVectorStore.dump(path)``, read with its
    ``load``: each entry's id, text, metadata and vector; ``metadata[entity_key]`` (when a
    string) is the document, as ``LangChainVectorStore`` does. Needs the langchain extra."""
    try:
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_core.vectorstores import InMemoryVectorStore
    except ImportError as exc:
        raise MissingDependencyError(
            "reading a LangChain dump needs langchain-core: pip install 'rag-pgstore[langchain]'"
        ) from exc
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"expected an InMemoryVectorStore dump file, got {str(file)!r}")
    try:
        # The embedding is never called: the vectors come from the file.
        store = InMemoryVectorStore.load(str(file), embedding=DeterministicFakeEmbedding(size=1))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{file} is not an InMemoryVectorStore dump: {exc}") from None
    entries: dict[str, dict[str, Any]] = store.store

    def to_chunk(chunk_id: str) -> Chunk:
        entry = entries[chunk_id]
        metadata = dict(entry.get("metadata") or {})
        entity = metadata.get(entity_key) if entity_key else None
        vector = entry.get("vector")
        if vector is None:
            raise InvalidInputError(f"expected a vector for {chunk_id!r} in {file}, got none")
        return Chunk(
            chunk_id=str(entry.get("id") or chunk_id),
            entity_id=entity if isinstance(entity, str) else None,
            content=str(entry.get("text") or ""),
            embedding=[float(x) for x in vector],
            metadata=metadata,
        )

    return _FileSource(f"langchain-dump:{file.resolve()}", list(entries), to_chunk)


def llamaindex_persist_dir(path: str | os.PathLike[str]) -> _FileSource:
    """A directory written by LlamaIndex's ``StorageContext.persist()``: each vector of its
    default ``SimpleVectorStore``, with its node from the docstore, as the chunk
    ``LlamaIndexVectorStore`` makes of that node. Needs the llamaindex extra."""
    try:
        from llama_index.core import StorageContext

        from rag_pgstore.adapters.llamaindex.vectorstore import to_chunk as node_chunk
    except ImportError as exc:
        raise MissingDependencyError(
            "reading a LlamaIndex persist directory needs llama-index-core: pip install "
            "'rag-pgstore[llamaindex]'"
        ) from exc
    folder = Path(path)
    if not (folder / "default__vector_store.json").is_file():
        raise InvalidInputError(
            f"expected a StorageContext.persist() directory (with default__vector_store.json), "
            f"got {str(folder)!r}"
        )
    try:
        context = StorageContext.from_defaults(persist_dir=str(folder))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a missing or broken JSON file
        raise InvalidInputError(
            f"{folder} is not a complete StorageContext.persist() directory: {exc}"
        ) from None
    vectors: dict[str, list[float]] = context.vector_store.data.embedding_dict  # type: ignore[attr-defined]
    docstore = context.docstore

    def to_chunk(node_id: str) -> Chunk:
        node = docstore.get_node(node_id, raise_error=False)
        if node is None:
            raise SchemaError(
                f"expected node {node_id!r} in the docstore of {folder}, found only its vector; "
                "persist the index with its docstore (the default), then import"
            )
        node.embedding = [float(x) for x in vectors[node_id]]
        return node_chunk(node)

    return _FileSource(f"llama-index-dir:{folder.resolve()}", list(vectors), to_chunk)
