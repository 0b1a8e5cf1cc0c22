"""Split text into chunks of at most ``max_tokens`` tiktoken tokens, at natural boundaries.

The text is cut into units — paragraphs, or, where a paragraph is too long, sentences, then
words, and only for a "word" longer than the budget (a URL, a line of CJK) token windows — and
consecutive units are packed greedily into chunks. Each chunk is an exact slice of the source,
``text[start:end]``, so nothing is rewritten, no character is split (token windows cut at
character boundaries) and the source is recovered from the offsets. Consecutive chunks share at
most ``overlap`` tokens of whole units. Special-token strings such as ``<|endoftext|>`` are
ordinary text.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rag_pgstore.chunking.encodings import load_encoding
from rag_pgstore.errors import InvalidChunkError

if TYPE_CHECKING:
    import tiktoken

__all__ = ["TextChunk", "TokenChunker"]

# Paragraphs end at a blank line; sentences after . ! ? (and their CJK forms) plus space; words
# at whitespace, which stays with the word after it, as tiktoken's own pre-tokenizer keeps it.
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+")
_WORD = re.compile(r"(?=\s)(?<=\S)")
_LEVELS = (_SENTENCE, _WORD)
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
            or self.max_tokens < 1
        ):
            raise InvalidChunkError(f"expected max_tokens >= 1, got {self.max_tokens!r}")
        if self.overlap is not None and (
            not isinstance(self.overlap, int) or not 0 <= self.overlap < self.max_tokens
        ):
            raise InvalidChunkError(
                f"expected 0 <= overlap < max_tokens ({self.max_tokens}), got {self.overlap!r}"
            )

    def spans(self, text: str) -> list[tuple[int, int, int]]:
        """``(start, end, token_count)`` of each chunk of ``text``; none for blank text."""
        if not isinstance(text, str):
            raise InvalidChunkError(f"expected text to be str, got {type(text).__name__}")
        if not text.strip():
            return []
        units = _Units(text, self)
        return _pack(text, list(units.all()), units.enc, self.max_tokens, self.overlap_tokens)

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
                content_hash=hashlib.sha256(text[start:end].encode()).hexdigest(),
                metadata=dict(metadata or {}),
            )
            for i, (start, end, count) in enumerate(spans)
        ]


class _Units:
    """The units of one text, each at most ``max_tokens`` tokens."""

    def __init__(self, text: str, chunker: TokenChunker) -> None:
        self.text = text
        self.max = chunker.max_tokens
        self.enc: tiktoken.Encoding = load_encoding(chunker.encoding)

    def all(self) -> Iterator[tuple[int, int, int]]:
        paragraphs = _pieces(self.text, 0, len(self.text), _PARAGRAPH)
        # (tiktoken's encode_ordinary_batch spawns a thread-pool task per text: far slower than
        # a plain loop for thousands of paragraphs.)
        counts = [len(self.enc.encode_ordinary(self.text[s:e])) for s, e in paragraphs]
        for (start, end), count in zip(paragraphs, counts, strict=True):
            if count <= self.max:
                yield start, end, count
            else:
                yield from self.finer(start, end, 0)

    def finer(self, start: int, end: int, level: int) -> Iterator[tuple[int, int, int]]:
        if level == len(_LEVELS):
            yield from self.windows(start, end)
            return
        pieces = _pieces(self.text, start, end, _LEVELS[level])
        for s, e in pieces:
            count = len(self.enc.encode_ordinary(self.text[s:e]))
            if count <= self.max:
                yield s, e, count
            else:
                yield from self.finer(s, e, level + 1)

    def windows(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """Token windows over an unbreakable run, cut only where a character starts."""
        piece = self.text[start:end]
        tokens = self.enc.encode_ordinary(piece)
        _, offsets = self.enc.decode_with_offsets(tokens)
        begin = 0  # token index where the current window starts
        while begin < len(tokens):
            stop = min(begin + self.max, len(tokens))
            while True:
                cut = offsets[stop] if stop < len(tokens) else len(piece)
                first = offsets[begin]
                count = len(self.enc.encode_ordinary(piece[first:cut]))
                # A cut inside a multi-byte character moves back to where it starts; re-encoding
                # the slice may also differ by a token. Shrink until the slice fits and advances.
                if (count <= self.max and cut > first) or stop == begin + 1:
                    break
                stop -= 1
            if cut <= first:  # one token that is part of a character: take the whole character
                cut = next((o for o in offsets[stop:] if o > first), len(piece))
                count = len(self.enc.encode_ordinary(piece[first:cut]))
            yield start + first, start + cut, count
            begin = next((i for i in range(stop, len(tokens)) if offsets[i] >= cut), len(tokens))


def _pieces(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[tuple[int, int]]:
    """Contiguous spans covering ``text[start:end]``, cut after each separator match."""
    cuts = [m.end() for m in separator.finditer(text, start, end) if start < m.end() < end]
    bounds = [start, *cuts, end]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _pack(
    text: str,
    units: list[tuple[int, int, int]],
    enc: tiktoken.Encoding,
    budget: int,
    overlap: int,
) -> list[tuple[int, int, int]]:
    """Greedily fill chunks with whole units; start each next one up to ``overlap`` tokens back.

    Units are counted apart, and a chunk usually encodes to no more than the sum of its units,
    but not always (tiktoken's pre-tokenizer can split differently across a join). So every
    chunk is counted whole; a chunk that came out over budget loses units from its end, and
    packing resumes after it.
    """

    def greedy_end(i: int) -> int:
        j, total = i, 0
        while j < len(units) and (j == i or total + units[j][2] <= budget):
            total += units[j][2]  # every unit fits the budget alone, so the first always goes in
            j += 1
        return j

    def next_start(i: int, j: int) -> int:
        # Step back over whole units for the overlap, leaving room for the next new unit so
        # that every chunk adds text.
        k, back, fresh = j, 0, units[j][2]
        while k - 1 > i and back + units[k - 1][2] <= min(overlap, budget - fresh):
            back += units[k - 1][2]
            k -= 1
        return k

    def span(i: int, j: int) -> str:
        return text[units[i][0] : units[j - 1][1]]

    chunks: list[tuple[int, int, int]] = []
    i = 0
    while i < len(units):
        ranges = []
        start = i
        while start < len(units):
            end = greedy_end(start)
            ranges.append((start, end))
            start = next_start(start, end) if end < len(units) else len(units)
        counts = [len(enc.encode_ordinary(span(a, b))) for a, b in ranges]
        i = len(units)
        for (a, planned), counted in zip(ranges, counts, strict=True):
            b, count = planned, counted
            while count > budget and b - 1 > a:
                b -= 1
                count = len(enc.encode_ordinary(span(a, b)))
            chunks.append((units[a][0], units[b - 1][1], count))
            if b != planned:  # shrunk: what follows must be packed again
                i = next_start(a, b)
                break
    return chunks
