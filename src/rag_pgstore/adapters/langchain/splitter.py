"""The tiktoken chunker as a LangChain ``TextSplitter`` (needs ``langchain-text-splitters``)."""

from __future__ import annotations

import copy
from typing import Any

from langchain_core.documents import Document
from langchain_text_splitters import TextSplitter

from rag_pgstore.chunking import TokenChunker

__all__ = ["ChunkerTextSplitter"]


class ChunkerTextSplitter(TextSplitter):
    """Split by tokens at paragraph, sentence and word boundaries (:class:`TokenChunker`).

    Chunks are exact slices of the input, never stripped; with ``add_start_index=True`` the
    metadata gets the true ``start_index`` (and ``end_index``), not a ``str.find`` guess.

    >>> ChunkerTextSplitter(TokenChunker(max_tokens=256)).split_documents(docs)
    """

    def __init__(
        self, chunker: TokenChunker | None = None, *, add_start_index: bool = False
    ) -> None:
        self.chunker = chunker or TokenChunker()
        super().__init__(
            chunk_size=self.chunker.max_tokens,
            chunk_overlap=self.chunker.overlap_tokens,
            length_function=self._count,
            add_start_index=add_start_index,
            strip_whitespace=False,
        )

    def _count(self, text: str) -> int:
        from rag_pgstore.chunking import load_encoding

        return len(load_encoding(self.chunker.encoding).encode_ordinary(text))

    def split_text(self, text: str) -> list[str]:
        return [text[start:end] for start, end, _ in self.chunker.spans(text)]

    def create_documents(
        self, texts: list[str], metadatas: list[dict[Any, Any]] | None = None
    ) -> list[Document]:
        documents = []
        for i, text in enumerate(texts):
            for start, end, count in self.chunker.spans(text):
                metadata = copy.deepcopy(metadatas[i]) if metadatas else {}
                if self._add_start_index:
                    metadata.update(start_index=start, end_index=end, token_count=count)
                documents.append(Document(page_content=text[start:end], metadata=metadata))
        return documents
