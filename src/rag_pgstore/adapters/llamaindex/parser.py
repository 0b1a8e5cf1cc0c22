"""The tiktoken chunker as a LlamaIndex node parser."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.node_parser import TextSplitter
from llama_index.core.node_parser.node_utils import build_nodes_from_splits
from llama_index.core.schema import BaseNode, MetadataMode

from rag_pgstore.chunking import TokenChunker

__all__ = ["ChunkerNodeParser"]


class ChunkerNodeParser(TextSplitter):
    """Split nodes by tokens at paragraph, sentence and word boundaries (:class:`TokenChunker`).

    Each resulting node keeps its relationship to the source node, and exact
    ``start_char_idx`` / ``end_char_idx`` offsets into it.
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
        parsed: list[BaseNode] = []
        for node in nodes:
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            spans = chunker.spans(text)
            children = build_nodes_from_splits(
                [text[s:e] for s, e, _ in spans], node, id_func=self.id_func
            )
            for child, (start, end, _) in zip(children, spans, strict=True):
                child.start_char_idx, child.end_char_idx = start, end
            parsed.extend(children)
        return parsed
