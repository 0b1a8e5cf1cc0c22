"""Where a text may be cut without changing how tiktoken counts either side.

tiktoken first splits text into pieces with a regex, then byte-pair-encodes each piece on its
own. A cut at a position where the regex has a piece boundary *and* where cutting changes no
piece on either side lets a chunk's token count be read off the one encoding of the whole text:
``count(text[a:b])`` is the number of whole-text tokens between ``a`` and ``b``. That is what
makes the chunker about as fast as one ``encode_ordinary`` call.

Two kinds of position are stable, for ``cl100k_base`` and ``o200k_base`` alike:

* a space after a non-whitespace character (``"word| next"``). No piece pattern ends in a
  space after a non-space character, and none has a space inside it, so a piece starts at the
  space; the piece before it ends because the next character did not match, which a substring
  ending there reproduces (the only lookahead, ``\\s+(?!\\S)``, holds before a space and at
  the end alike);
* a non-whitespace character after a line break (``"line\\n|Next"``), except ``/`` (o200k's
  punctuation pieces may swallow ``\\n/``). Pieces that contain a line break end with it.

Everything else (inside a word, between CJK characters, inside whitespace runs) may be cut
only with a recount. The test suite checks the claim on every chunk it makes.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import tiktoken

__all__ = ["FORCED", "LINE", "PARAGRAPH", "SENTENCE", "WORD", "levels", "token_bounds", "token_ids"]

# How good a cut is, best last. FORCED positions are character boundaries only (recount).
FORCED, WORD, SENTENCE, LINE, PARAGRAPH, EDGE = 0, 1, 2, 2, 3, 4
NOT_A_CUT = -1

# Last bytes of the UTF-8 forms of non-ASCII whitespace (U+0085, U+00A0, U+1680, U+2000 to 200A,
# U+2028/9, U+202F, U+205F, U+3000): a space after one of them is not known to be stable.
_WHITESPACE_TAILS = np.array([0x85, 0xA0, *range(0x80, 0x8B), 0xA8, 0xA9, 0xAF, 0x9F])
# Lead bytes that may start non-ASCII whitespace (C2, E1, E2, E3): not trusted after a newline.
_WHITESPACE_LEADS = np.array([0xC2, 0xE1, 0xE2, 0xE3])

Bytes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.int64]


@functools.cache
def _byte_lengths(enc: tiktoken.Encoding) -> Ints:
    """Length in bytes of every token id (0 for ids the encoding does not define)."""
    lengths = np.zeros(enc.n_vocab, dtype=np.int64)
    for token in range(enc.n_vocab):
        with contextlib.suppress(KeyError):  # a gap in the id space
            lengths[token] = len(enc.decode_single_token_bytes(token))
    return lengths


def token_ids(enc: tiktoken.Encoding, text: str) -> npt.NDArray[np.uint32]:
    """``text``'s tokens; special-token strings are ordinary text, as with ``encode_ordinary``."""
    return enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())


def token_bounds(enc: tiktoken.Encoding, tokens: npt.NDArray[np.uint32]) -> Ints:
    """Byte offsets in the text's UTF-8 form where each of its ``tokens`` starts, then the
    total length."""
    bounds = np.zeros(len(tokens) + 1, dtype=np.int64)
    np.cumsum(_byte_lengths(enc)[tokens], out=bounds[1:])
    return bounds


def levels(data: Bytes, bounds: Ints) -> npt.NDArray[np.int8]:
    """The cut level at every token bound: EDGE at both ends, FORCED where only a character
    starts, NOT_A_CUT inside a character."""
    out = np.full(len(bounds), NOT_A_CUT, dtype=np.int8)
    out[0] = out[-1] = EDGE
    if len(bounds) <= 2:
        return out
    pos = bounds[1:-1]
    cur = data[pos]
    prev = data[pos - 1]
    before = data[np.maximum(pos - 2, 0)]
    earlier = data[np.maximum(pos - 3, 0)]
    lead = (cur & 0xC0) != 0x80
    prev_solid = ((prev >= 0x21) & (prev <= 0x7E)) | (
        (prev >= 0x80) & ~np.isin(prev, _WHITESPACE_TAILS)
    )
    word = (cur == 0x20) & prev_solid
    sentence = word & ((prev == 0x2E) | (prev == 0x21) | (prev == 0x3F))  # . ! ?
    cur_solid = ((cur >= 0x21) & (cur <= 0x7E) & (cur != 0x2F)) | (
        (cur >= 0xC3) & ~np.isin(cur, _WHITESPACE_LEADS)
    )
    line = ((prev == 0x0A) | (prev == 0x0D)) & cur_solid
    paragraph = line & ((before == 0x0A) | ((before == 0x0D) & (earlier == 0x0A)))  # \n\n, \r\n\r\n
    inner = np.where(lead, FORCED, NOT_A_CUT).astype(np.int8)
    inner[word] = WORD
    inner[sentence] = SENTENCE
    inner[line] = LINE
    inner[paragraph] = PARAGRAPH
    out[1:-1] = inner
    return out
