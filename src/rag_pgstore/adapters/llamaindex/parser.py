"""The tiktoken chunker as a LlamaIndex node parser."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.node_parser import TextSplitter
from llama_index.core.node_parser.node_utils import (
    IdFuncCallable,
    build_nodes_from_splits,
    default_id_func,
)
from llama_index.core.schema import BaseNode, MetadataMode

from rag_pgstore.chunking import TokenChunker

__all__ = ["ChunkerNodeParser"]


class ChunkerNodeParser(TextSplitter):
    """Split nodes by tokens at paragraph, sentence and word boundaries (:class:`TokenChunker`).

    Each resulting node keeps its relationship to the source node, and exact
    ``start_char_idx`` / ``end_char_idx`` offsets into it. Node ids are
    ``"<source node id>#<index>"`` (unless ``id_func`` is given), so ingesting a document
    again replaces its nodes instead of adding a second copy under new random ids.
    """

    max_tokens: int = Field(default=512, description="Token budget per chunk.")
    overlap: int | None = Field(default=None, description="Tokens shared by neighbours.")
    encoding: str = Field(default="cl100k_base", description="tiktoken encoding or model name.")

    @classmethod
    def class_name(cls) -> str:
        return "RagPgStoreChunkerNodeParser"

    @property
    def chunker(self) -> TokenChunker:
        return TokenChunker(
            max_tokens=self.max_tokens, overlap=self.overlap, encoding=self.encoding
        )

    def split_text(self, text: str) -> list[str]:
        return [text[start:end] for start, end, _ in self.chunker.spans(text)]

    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        chunker = self.chunker
        id_func: IdFuncCallable = _stable_id if self.id_func is default_id_func else self.id_func
        parsed: list[BaseNode] = []
        for node in nodes:
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            spans = chunker.spans(text)
            children = build_nodes_from_splits(
                [text[s:e] for s, e, _ in spans], node, id_func=id_func
            )
            for child, (start, end, _) in zip(children, spans, strict=True):
                child.start_char_idx, child.end_char_idx = start, end
            parsed.extend(children)
        return parsed


def _stable_id(i: int, doc: BaseNode) -> str:
    return f"{doc.node_id}#{i}"
