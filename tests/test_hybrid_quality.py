"""Hybrid search earns its name: on a real retrieval set with a real model, it ranks better
than vector-only and text-only search (benchmarks/retrieval.py has the set and judgments)."""

from __future__ import annotations

import pytest

pytest.importorskip("sentence_transformers", reason="the local model")
pytestmark = pytest.mark.extras

from benchmarks.retrieval import evaluate, load_store, local_model_embed, standard_searches
from tests.conftest import StoreFactory


def test_hybrid_beats_vector_only_and_text_only(make_store: StoreFactory) -> None:
    embed = local_model_embed()  # the real all-MiniLM-L6-v2, offline
    store = make_store(dim=384)
    chunks = load_store(store, embed)
    assert store.count() == len(chunks) > 500
    results = evaluate(chunks, embed, standard_searches(store))
    vector = results["vector only"]
    text = results["text only (any words)"]
    hybrid = results["hybrid, relative score (default)"]
    assert hybrid.ndcg > max(vector.ndcg, text.ndcg) + 0.02, results
    assert hybrid.mrr > max(vector.mrr, text.mrr) + 0.03, results
    # The strict AND of websearch_to_tsquery finds almost nothing for questions.
    assert results["text only (websearch_to_tsquery)"].ndcg < text.ndcg / 2
