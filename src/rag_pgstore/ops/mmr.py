"""Maximal marginal relevance: pick results that are relevant *and* unlike each other."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mmr_select"]


def mmr_select(
    query: Sequence[float], candidates: Sequence[Sequence[float]], *, k: int, lambda_mult: float
) -> list[int]:
    """Return the indexes of up to ``k`` candidates, in the order MMR picks them.

    Each step takes the candidate maximising ``lambda_mult * sim(query, c) - (1 - lambda_mult) *
    max sim(c, already picked)``, with cosine similarity. ``lambda_mult=1`` is plain relevance
    order; ``0`` is maximal diversity.
    """
    if not 0.0 <= lambda_mult <= 1.0:
        raise ValueError(f"expected 0 <= lambda_mult <= 1, got {lambda_mult}")
    if not candidates or k < 1:
        return []
    matrix = _unit(np.asarray(candidates, dtype=np.float64))
    relevance = matrix @ _unit(np.asarray(query, dtype=np.float64)[None, :])[0]
    picked = [int(np.argmax(relevance))]
    # Highest similarity of each candidate to anything picked so far, updated incrementally.
    redundancy = matrix @ matrix[picked[0]]
    while len(picked) < min(k, len(matrix)):
        score = lambda_mult * relevance - (1.0 - lambda_mult) * redundancy
        score[picked] = -np.inf
        best = int(np.argmax(score))
        picked.append(best)
        redundancy = np.maximum(redundancy, matrix @ matrix[best])
    return picked


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms == 0.0, 1.0, norms)
