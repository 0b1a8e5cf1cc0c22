"""A deterministic bag-of-words embedding for tests, demos and smoke runs; no model needed.

Each lower-cased word adds +1 or -1 to one of ``dim`` slots picked by a hash of the word, and
the result is scaled to unit length. Texts that share words point the same way, so cosine
similarity behaves like word overlap: predictable by hand, useless for real semantics.
"""

from __future__ import annotations

import hashlib
import math
import re

__all__ = ["hash_embedding"]

_WORD = re.compile(r"\w+")


def hash_embedding(text: str, dim: int = 64) -> list[float]:
    """Embed ``text`` into ``dim`` floats; the same text always gives the same vector."""
    vector = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        vector[value % dim] += 1.0 if value >> 63 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0] = 1.0  # empty text: a fixed unit vector rather than an all-zero one
        return vector
    return [v / norm for v in vector]
