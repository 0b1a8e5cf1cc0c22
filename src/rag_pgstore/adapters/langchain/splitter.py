"""The tiktoken chunker as a LangChain ``TextSplitter`` (needs ``langchain-text-splitters``)."""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any, Literal

from langchain_core.documents import Document
from langchain_text_splitters import TextSplitter

from rag_pgstore.chunking import TokenChunker
from rag_pgstore.errors import UnsupportedError

__all__ = ["ChunkerTextSplitter"]

DEFAULT_ENCODING = "cl100k_base"  # vendored: works offline (LangChain's "gpt2" default is not)


class ChunkerTextSplitter(TextSplitter):
    """Split by tokens at paragraph, sentence and word boundaries (:class:`TokenChunker`).

    Takes the keyword arguments LangChain splitters take, in tokens as ``TokenTextSplitter``
    and ``from_tiktoken_encoder`` count them: ``chunk_size``, ``chunk_overlap``,
    ``encoding_name`` / ``model_name`` (the model wins), ``add_start_index``; or a ready
    ``TokenChunker``. Chunks are exact slices of the input, never stripped; with
    ``add_start_index=True`` the metadata gets the true ``start_index`` (and ``end_index``,
    ``token_count``), not a ``str.find`` guess. Special-token strings such as
    ``<|endoftext|>`` are split as ordinary text.

    >>> ChunkerTextSplitter(chunk_size=256, chunk_overlap=32).split_documents(docs)
    >>> ChunkerTextSplitter(TokenChunker(max_tokens=256)).split_text(text)
    """

    def __init__(
        self,
        chunker: TokenChunker | None = None,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        encoding_name: str | None = None,
        model_name: str | None = None,
        add_start_index: bool = False,
        strip_whitespace: bool = False,
        **kwargs: Any,
    ) -> None:
        given = {
            name: value
            for name, value in (
                ("chunk_size", chunk_size),
                ("chunk_overlap", chunk_overlap),
                ("encoding_name", encoding_name),
                ("model_name", model_name),
            )
            if value is not None
        }
        if chunker is not None and given:
            raise UnsupportedError(
                f"expected a TokenChunker or {', '.join(given)}, got both; set them on the chunker"
            )
        _refuse(kwargs, strip_whitespace)
        if chunker is None:
            chunker = TokenChunker(
                max_tokens=TokenChunker.max_tokens if chunk_size is None else chunk_size,
                overlap=chunk_overlap,
                encoding=model_name or encoding_name or DEFAULT_ENCODING,
            )
        self.chunker = chunker
        super().__init__(
            chunk_size=chunker.max_tokens,
            chunk_overlap=chunker.overlap_tokens,
            length_function=self._count,
            add_start_index=add_start_index,
            strip_whitespace=False,
        )

    @classmethod
    def from_tiktoken_encoder(
        cls,
        encoding_name: str = DEFAULT_ENCODING,
        model_name: str | None = None,
        allowed_special: Literal["all"] | Collection[str] | None = None,
        disallowed_special: Literal["all"] | Collection[str] = "all",
        **kwargs: Any,
    ) -> ChunkerTextSplitter:
        """LangChain's constructor for token-counted splitters; sizes are in tokens."""
        if allowed_special:
            raise UnsupportedError(
                f"expected no allowed_special tokens, got {allowed_special!r}: the chunker "
                "splits special-token strings as ordinary text and never emits special tokens"
            )
        # disallowed_special is moot: no special token is ever produced, so none can leak.
        return cls(encoding_name=encoding_name, model_name=model_name, **kwargs)

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


def _refuse(kwargs: dict[str, Any], strip_whitespace: bool) -> None:
    """Raise for TextSplitter options whose promise the chunker cannot keep."""
    if strip_whitespace:
        raise UnsupportedError(
            "expected strip_whitespace=False: chunks are exact slices of the text, so their "
            "offsets stay true; strip them yourself if you must"
        )
    if "length_function" in kwargs:
        raise UnsupportedError(
            "expected no length_function: the chunker measures chunks in tokens of its "
            "encoding; pass encoding_name= or model_name= instead"
        )
    if kwargs.get("keep_separator", False) not in (False, "end"):
        raise UnsupportedError(
            "expected keep_separator False or 'end': every chunk ends after its break"
        )
    unknown = sorted(set(kwargs) - {"keep_separator"})
    if unknown:
        raise UnsupportedError(f"expected TextSplitter keyword arguments, got {unknown}")
