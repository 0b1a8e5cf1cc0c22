"""Measure hybrid search against vector-only and text-only ranking on a real retrieval set.

    python -m benchmarks.hybrid_eval            # embedded Postgres, or $DATABASE_URL

Writes docs/results/hybrid-eval.md. See benchmarks/retrieval.py for the corpus and judgments.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.retrieval import QUERIES, evaluate, load_store, local_model_embed, standard_searches
from rag_pgstore import ChunkStore, KeywordSearch

OUT = Path(__file__).parent.parent / "docs" / "results" / "hybrid-eval.md"


def main() -> None:
    embed = local_model_embed()
    url = os.environ.get("DATABASE_URL")
    results = {}
    for keyword in (KeywordSearch.BM25, KeywordSearch.TS_RANK):
        store = ChunkStore.from_url(
            url, collection=f"hybrid_eval_{keyword.value}", dim=384, keyword=keyword, setup=False
        )
        store.drop()
        store.setup()
        started = time.perf_counter()
        chunks = load_store(store, embed)
        loaded = time.perf_counter() - started
        for name, scores in evaluate(chunks, embed, standard_searches(store)).items():
            if keyword is KeywordSearch.BM25 or name != "vector only":
                results[f"{name}, {keyword.value}" if name != "vector only" else name] = scores
        store.drop()
        store.close()
    lines = [
        "# Hybrid search evaluation",
        "",
        f"Command: `python -m benchmarks.hybrid_eval` (Python {platform.python_version()}, "
        f"{platform.machine()}). Corpus: {len(chunks)} chunks of the Python Language Reference; "
        f"{len(QUERIES)} questions with judged answers (benchmarks/retrieval.py). Embeddings: "
        f"all-MiniLM-L6-v2, 384 d, cosine. Embedding + loading took {loaded:.0f} s. The text "
        "side is ranked by each keyword mode: `bm25` (the default for new collections) and "
        "`ts_rank` (what collections made before keyword modes use).",
        "",
        "| ranking | nDCG@10 | MRR@10 | Recall@10 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s.ndcg:.3f} | {s.mrr:.3f} | {s.recall:.3f} |" for name, s in results.items()
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
