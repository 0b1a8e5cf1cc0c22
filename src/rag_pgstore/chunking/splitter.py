"""Split text into chunks of at most ``max_tokens`` tiktoken tokens, at natural boundaries.

The text is encoded once. Each chunk is then filled up to the budget and ends at the best cut
in reach: the last paragraph break, else the last sentence end or line break, in the second
half of the budget; else the last word break; only in a run with no break at all (a URL, a
line of CJK) at a character boundary. Paragraph, line, sentence and word cuts are *stable*
(see ``boundaries``), so their token counts come from the one encoding; a chunk with a
character-boundary cut is recounted and shortened until it fits. Each chunk is an exact slice
of the source, ``text[start:end]``; the next one starts up to ``overlap`` tokens back, at a
sentence start if there is one there, else a word. Special-token strings such as
``<|endoftext|>`` are ordinary text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rag_pgstore.chunking.boundaries import (
    FORCED,
    PARAGRAPH,
    SENTENCE,
    WORD,
    Ints,
    levels,
    token_bounds,
    token_ids,
)
from rag_pgstore.chunking.encodings import load_encoding
from rag_pgstore.codec import content_hash
from rag_pgstore.errors import InvalidInputError
from rag_pgstore.types import Chunk

if TYPE_CHECKING:
    import tiktoken

__all__ = ["TextChunk", "TokenChunker"]

# A character is at most 4 UTF-8 bytes, so at most 4 byte-level BPE tokens: with this budget
# every character fits in a chunk without being split.
MIN_TOKENS = 4


@dataclass(frozen=True, slots=True)
class TextChunk:
    """One chunk: ``source[start:end] == text``, with its token count and identity."""

    text: str
    start: int
    end: int
    token_count: int
    chunk_index: int
    total_chunks: int
    chunk_id: str
    entity_id: str
    content_hash: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_chunk(self, embedding: Sequence[float]) -> Chunk:
        """This chunk with its ``embedding``, ready for ``store.upsert``."""
        return Chunk(
            chunk_id=self.chunk_id,
            entity_id=self.entity_id,
            chunk_index=self.chunk_index,
            total_chunks=self.total_chunks,
            content=self.text,
            embedding=embedding,
            metadata=self.metadata,
        )


@dataclass(frozen=True)
class TokenChunker:
    """Split text into chunks of at most ``max_tokens`` tokens, sharing up to ``overlap``.

    ``overlap`` defaults to ``min(64, max_tokens // 4)``. ``encoding`` is any tiktoken
    encoding or model name; ``cl100k_base`` and ``o200k_base`` work offline. Nothing is
    loaded until the first split.

    >>> TokenChunker(max_tokens=256, overlap=32).chunk(text, entity_id="guide.md")
    """

    max_tokens: int = 512
    overlap: int | None = None
    encoding: str = "cl100k_base"

    @property
    def overlap_tokens(self) -> int:
        """``overlap``, or its default ``min(64, max_tokens // 4)``."""
        return min(64, self.max_tokens // 4) if self.overlap is None else self.overlap

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or self.max_tokens < MIN_TOKENS
        ):
            raise InvalidInputError(
                f"expected max_tokens >= {MIN_TOKENS} (the most tokens one character takes), "
                f"got {self.max_tokens!r}"
            )
        if self.overlap is not None and (
            not isinstance(self.overlap, int) or not 0 <= self.overlap < self.max_tokens
        ):
            raise InvalidInputError(
                f"expected 0 <= overlap < max_tokens ({self.max_tokens}), got {self.overlap!r}"
            )

    def spans(self, text: str) -> list[tuple[int, int, int]]:
        """``(start, end, token_count)`` of each chunk of ``text``; none for blank text."""
        if not isinstance(text, str):
            raise InvalidInputError(f"expected text to be str, got {type(text).__name__}")
        if not text.strip():
            return []
        try:
            data = text.encode()
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"expected text encodable as UTF-8, got a lone surrogate at index {exc.start}; "
                "decode your input with errors='replace' (or fix its source)"
            ) from None
        enc = load_encoding(self.encoding)
        tokens = token_ids(enc, text)
        if len(tokens) <= self.max_tokens:
            # One chunk, the whole text, as the packer would make it (both ends are edges, so
            # the count is the text's): no bounds or cut levels to compute for a short text.
            return [(0, len(text), len(tokens))]
        bounds = token_bounds(enc, tokens)
        packer = _Packer(enc, data, bounds, self.max_tokens, self.overlap_tokens)
        return _char_spans(text, data, packer.spans())

    def chunk(
        self, text: str, *, entity_id: str, metadata: Mapping[str, Any] | None = None
    ) -> list[TextChunk]:
        """Chunks of ``text`` with ids ``"{entity_id}#{index}"``: the same text, the same ids."""
        spans = self.spans(text)
        return [
            TextChunk(
                text=text[start:end],
                start=start,
                end=end,
                token_count=count,
                chunk_index=i,
                total_chunks=len(spans),
                chunk_id=f"{entity_id}#{i}",
                entity_id=entity_id,
                content_hash=content_hash(text[start:end]),
                metadata=dict(metadata or {}),
            )
            for i, (start, end, count) in enumerate(spans)
        ]


class _Packer:
    """Fills chunks over one text's token bounds, in token indices; spans come out in bytes."""

    def __init__(
        self, enc: tiktoken.Encoding, data: bytes, bounds: Ints, budget: int, overlap: int
    ) -> None:
        self.enc, self.data, self.bounds = enc, data, bounds
        self.cuts = levels(np.frombuffer(data, dtype=np.uint8), bounds)
        self.tokens = len(bounds) - 1
        self.budget, self.overlap = budget, overlap

    def spans(self) -> list[tuple[int, int, int]]:
        out = []
        start = done = 0  # where this chunk starts; where the last one ended (token indices)
        while True:
            end, count = self.end(start, done)
            if count > self.budget and start < done:  # the overlap leaves no room: drop it
                start = done
                end, count = self.end(start, done)
            out.append((int(self.bounds[start]), int(self.bounds[end]), count))
            if end >= self.tokens:
                return out
            start, done = self.next_start(start, end), end

    def end(self, start: int, done: int) -> tuple[int, int]:
        """Where the chunk from ``start`` ends (past ``done``), and its token count."""
        lo = max(start, done) + 1
        hi = start + self.budget
        if hi >= self.tokens:
            end = self.tokens
        else:
            window = self.cuts[lo : hi + 1]
            end = lo + self.last(window, PARAGRAPH, start + self.budget // 2 - lo)
            if end < lo:
                end = lo + self.last(window, SENTENCE, start + self.budget // 2 - lo)
            if end < lo:
                end = lo + self.last(window, WORD, 0)
            if end < lo:
                end = lo + self.last(window, FORCED, 0)
            if end < lo:  # the overlap left no room for a whole character: go over, then drop it
                end = lo + int(np.flatnonzero(self.cuts[lo:] >= FORCED)[0])
        if self.cuts[start] >= WORD and self.cuts[end] >= WORD:
            return end, end - start  # both cuts stable: the whole-text tokens are the count
        while True:
            text = self.data[self.bounds[start] : self.bounds[end]].decode()
            count = len(self.enc.encode_ordinary(text))
            shorter = np.flatnonzero(self.cuts[lo:end] >= FORCED)
            if count <= self.budget or not shorter.size:
                return end, count
            end = lo + int(shorter[-1])

    @staticmethod
    def last(window: npt.NDArray[np.int8], level: int, after: int) -> int:
        """Offset in ``window`` of its last cut at ``level`` or better beyond ``after``; -1."""
        hits = np.flatnonzero(window >= level)
        return int(hits[-1]) if hits.size and hits[-1] > after else -1

    def next_start(self, start: int, end: int) -> int:
        """Up to ``overlap`` tokens back from ``end``: the first sentence start, else word."""
        lo = max(end - self.overlap, start + 1)
        window = self.cuts[lo:end]
        for level in (SENTENCE, WORD):
            hits = np.flatnonzero(window >= level)
            if hits.size:
                return lo + int(hits[0])
        return end


def _char_spans(
    text: str, data: bytes, spans: list[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """Byte spans of ``data == text.encode()`` as character spans of ``text``."""
    if len(data) == len(text):  # ASCII: bytes are characters
        return spans
    chars: dict[int, int] = {}
    byte = char = 0
    for point in sorted({p for start, end, _ in spans for p in (start, end)}):
        char += len(data[byte:point].decode())
        byte = point
        chars[point] = char
    return [(chars[start], chars[end], count) for start, end, count in spans]
