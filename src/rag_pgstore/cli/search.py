"""``rag-pgstore search QUERY``: vector, keyword (``--text``) or hybrid search, printed with
the part of each chunk that matched (highlighted on a terminal).

A query's embedding is kept in the embedding cache, so asking the same question again (or
switching between vector and hybrid) does not load the model; ``--text`` never needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re

from rich.text import Text

from rag_pgstore.cli import models, output
from rag_pgstore.codec import content_hash
from rag_pgstore.errors import RagPgStoreError
from rag_pgstore.ops import cache
from rag_pgstore.pipeline import Embedder
from rag_pgstore.store import ChunkStore
from rag_pgstore.types import ScoredChunk

WINDOW = 240  # characters of a chunk shown around its best match
_WORD = re.compile(r"\w+")
_STOP = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from",
        "how", "i", "in", "is", "it", "my", "of", "on", "or", "the", "to", "what", "when",
        "where", "which", "who", "why", "with", "you", "your",
    }
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    store = models.open_store(args)
    try:
        hits = _search(args, store)
    finally:
        store.close()
    rows = [
        {
            "rank": i,
            "score": round(h.score, 4),
            "source": h.chunk.entity_id,
            "chunk_id": h.chunk.chunk_id,
            "text": h.chunk.content,
        }
        for i, h in enumerate(hits, 1)
    ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    console = output.console()
    console.print(Text(f"? {args.query}"))
    if not rows:
        console.print("  no matches")
    for row in rows:
        console.print(Text(f"{row['rank']:>3}  {row['score']:.3f}  {row['source']}"))
        body = Text(str(row["text"])) if args.full else snippet(str(row["text"]), args.query)
        console.print(Text("     ") + body)
    return 0


def _search(args: argparse.Namespace, store: ChunkStore) -> list[ScoredChunk]:
    if args.text:
        return store.text_search(args.query, k=args.k, filter=args.filter)
    vector = _query_vector(args, store)
    if args.hybrid:
        return store.hybrid_search(vector, args.query, k=args.k, filter=args.filter)
    return store.search(vector, k=args.k, filter=args.filter)


def _query_vector(args: argparse.Namespace, store: ChunkStore) -> list[float]:
    """The query's embedding: from the embedding cache when this model embedded the same
    text before, else from the model (loaded now), then cached."""
    embedder: Embedder = models.for_collection(args, store, models.recorded_embedder(store))
    c = store.collection
    key = content_hash(args.query)
    try:
        cached = store.run_plan(cache.lookup(c.schema, embedder.name, c.dim, [key]))
    except RagPgStoreError:
        cached = {}  # no cache table yet (nothing ingested by the pipeline), or no right to it
    if key in cached:
        return cached[key]
    (vector,) = embedder.embed([args.query])
    vector = [float(x) for x in vector]
    with contextlib.suppress(RagPgStoreError):  # a read-only role: embedded again next time
        store.run_plan(lambda: cache.remember(c.schema, embedder.name, {key: vector}))
    return vector


def snippet(text: str, query: str, width: int = WINDOW) -> Text:
    """The ``width`` characters of ``text`` holding the most query words, the words
    highlighted; the start of the text when none occurs."""
    terms = {_stem(w) for w in _WORD.findall(query.lower()) if w not in _STOP}
    flat = " ".join(text.split())
    spans = [
        (m.start(), m.end())
        for m in _WORD.finditer(flat)
        if any(_stem(m.group().lower()).startswith(t) for t in terms)
    ]
    start = 0
    if spans:
        best = -1
        for i, (s, _) in enumerate(spans):  # windows that start at a match
            inside = {_stem(flat[a:b].lower()) for a, b in spans[i:] if b <= s + width}
            if len(inside) > best:
                best, start = len(inside), max(0, s - width // 6)
        start = _word_start(flat, start)
    piece = flat[start : start + width]
    shown = Text(("…" if start else "") + piece + ("…" if start + width < len(flat) else ""))
    offset = 1 if start else 0
    for a, b in spans:
        if start <= a and b <= start + width:
            shown.stylize("bold yellow", a - start + offset, b - start + offset)
    return shown


def _stem(word: str) -> str:
    # Close enough for highlighting: "filters", "filtering", "filtered" share "filt".
    return word if len(word) <= 4 else word[: max(4, len(word) - 3)]


def _word_start(text: str, i: int) -> int:
    while 0 < i < len(text) and not text[i - 1].isspace():
        i -= 1
    return i
