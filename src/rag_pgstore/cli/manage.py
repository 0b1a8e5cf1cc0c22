"""The commands that look after collections: ``collections``, ``stats``, ``doctor``,
``delete``, ``drop`` and ``index``. None of them loads an embedding model."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rag_pgstore.cli import models, output
from rag_pgstore.errors import InvalidInputError
from rag_pgstore.pipeline.files import document_id
from rag_pgstore.pipeline.ingest import documents_under
from rag_pgstore.store import ChunkStore
from rag_pgstore.types import CollectionInfo, HnswIndex

# Above this many chunks an exact scan is slow enough that doctor recommends an ANN index.
ANN_ADVISED_ABOVE = 20_000


def collections(args: argparse.Namespace) -> int:
    found = ChunkStore.list_collections(args.database_url)
    rows = [
        {
            "collection": c.name,
            "chunks": c.chunks,
            "documents": c.entities,
            "dim": c.dim,
            "distance": c.distance,
            "keyword": c.keyword,
            "embedder": c.embedder or "-",
            "ann_index": (c.ann_index or {}).get("using", "-"),
        }
        for c in found
    ]
    if not rows and not args.json:
        output.note("no collections yet; `rag-pgstore ingest PATH` creates one")
    output.table(rows, as_json=args.json)
    return 0


def stats(args: argparse.Namespace) -> int:
    store = models.open_store(args)
    try:
        info = store.describe()
    finally:
        store.close()
    output.fields(_summary(info), as_json=args.json)
    return 0


def _summary(info: CollectionInfo) -> dict[str, Any]:
    return {
        "collection": info.name,
        "chunks": info.chunks,
        "documents": info.entities,
        "dim": info.dim,
        "distance": info.distance,
        "keyword": info.keyword,
        "embedder": info.embedder,
        "schema_version": info.schema_version,
        "ann_index": info.ann_index,
    }


def doctor(args: argparse.Namespace) -> int:
    store = models.open_store(args)
    try:
        assert store.engine is not None
        info = store.describe()
        url = store.engine.url.render_as_string(hide_password=True)
    finally:
        store.close()
    checks: dict[str, Any] = {
        "url": url,
        "server": info.server_version,
        "pgvector": info.pgvector_version,
        "indexes": ", ".join(info.indexes),
        "vector_search_plan": list(info.search_plan),
        "uses_ann_index": info.uses_ann_index,
    }
    checks.update({k: v for k, v in _summary(info).items() if k != "collection"})
    checks["advice"] = advice(info)
    if args.json:
        output.fields(checks, as_json=True)
    else:
        output.fields({k: v for k, v in checks.items() if k != "advice"}, as_json=False)
        for line in checks["advice"]:
            print(f"  - {line}")
    return 0


def advice(info: CollectionInfo) -> list[str]:
    """What to do about what ``describe`` found, in CLI terms; ``["nothing to fix"]`` when
    all is well."""
    tips: list[str] = []
    if info.ann_index is None and info.chunks > ANN_ADVISED_ABOVE:
        tips.append(
            f"no ANN index: every vector search scans all {info.chunks:,} chunks; run "
            f"`rag-pgstore index create --collection {info.name}`"
        )
    elif info.ann_index is not None and not info.uses_ann_index:
        tips.append(
            "the ANN index is not used by searches (PostgreSQL prefers a scan at this size, "
            "or its statistics are stale): fine for small collections"
        )
    if info.keyword == "ts_rank":
        tips.append(
            "keyword search ranks with ts_rank over every match; BM25 is faster and ranks "
            f"better: `rag-pgstore keyword bm25 --collection {info.name}`"
        )
    if info.embedder is None and info.chunks:
        tips.append("no embedder recorded (written from Python): pass --embedder to search it")
    if info.chunks == 0:
        tips.append(f"empty: `rag-pgstore ingest PATH --collection {info.name}` fills it")
    return tips or ["nothing to fix"]


def delete(args: argparse.Namespace) -> int:
    store = models.open_store(args)
    try:
        if args.path:
            everything = [p for p in args.path if document_id(p) == "/"]
            if everything and not args.yes:
                raise InvalidInputError(
                    "refusing to delete every document stored under '/' without --yes"
                )
            ids = _stored_for_paths(store, args.path)
            chunks = store.delete_entities(ids) if ids else 0
            what = f"{len(ids)} documents"
        elif args.entity:
            chunks = store.delete_entities(args.entity)
            what = f"the documents {', '.join(map(repr, args.entity))}"
        else:
            chunks = store.delete_where(args.filter)
            what = "the chunks matching the filter"
    finally:
        store.close()
    if chunks == 0:
        raise InvalidInputError(
            f"nothing to delete: no chunks of {what} in {args.collection!r}; "
            "`rag-pgstore stats` shows what it holds"
        )
    if args.json:
        output.fields({"chunks_deleted": chunks}, as_json=True)
    else:
        print(f"deleted {chunks} chunks ({what}) from {args.collection!r}")
    return 0


def _stored_for_paths(store: ChunkStore, paths: list[str]) -> list[str]:
    """The stored documents of files (by id) and under folders (by prefix), as ingest names
    them; a path need not exist any more."""
    prefixes = [document_id(p).rstrip("/") + "/" for p in paths]
    exact = {document_id(p) for p in paths}
    stored = store.run_plan(documents_under(store.collection, [*prefixes, *exact]))
    return sorted(i for i in stored if i in exact or i.startswith(tuple(prefixes)))


def drop(args: argparse.Namespace) -> int:
    args.collection = args.name
    store = models.open_store(args)
    try:
        info = store.describe()
        if not args.yes:
            if not sys.stdin.isatty():
                raise InvalidInputError(
                    f"refusing to drop {args.name!r} ({info.chunks} chunks) without "
                    "confirmation: pass --yes"
                )
            if not _confirmed(
                f"drop collection {args.name!r} with {info.chunks} chunks of "
                f"{info.entities} documents? There is no undo. [y/N] "
            ):
                output.note("not dropped")
                return 1
        store.drop()
    finally:
        store.close()
    if args.json:
        output.fields({"dropped": args.name, "chunks": info.chunks}, as_json=True)
    else:
        print(f"dropped {args.name!r} ({info.chunks} chunks)")
    return 0


def index(args: argparse.Namespace) -> int:
    store = models.open_store(args)
    started = time.perf_counter()
    try:
        if args.action == "create":
            spec = HnswIndex(m=args.m, ef_construction=args.ef_construction)
            changed = store.create_index(spec)
            done = (
                f"built an HNSW index (m={spec.m}, ef_construction={spec.ef_construction})"
                if changed
                else "the HNSW index is there already"
            )
        else:
            store.drop_index()
            changed, done = True, "dropped the ANN index: searches scan exactly"
    finally:
        store.close()
    seconds = time.perf_counter() - started
    if args.json:
        output.fields({"changed": changed, "seconds": round(seconds, 3)}, as_json=True)
    else:
        print(f"{done} on {args.collection!r} in {seconds:.1f} s")
    return 0


def _confirmed(question: str) -> bool:
    """Ask on the terminal (stderr, so ``--json`` output stays clean); Ctrl-D means no."""
    print(question, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")  # "" at end of input


def keyword(args: argparse.Namespace) -> int:
    store = models.open_store(args)
    started = time.perf_counter()
    try:
        changed = store.set_keyword_search(args.mode)
    finally:
        store.close()
    seconds = time.perf_counter() - started
    if args.json:
        output.fields({"changed": changed, "seconds": round(seconds, 3)}, as_json=True)
    elif changed:
        print(f"{args.collection!r} now ranks keywords with {args.mode} ({seconds:.1f} s)")
    else:
        print(f"{args.collection!r} ranks keywords with {args.mode} already")
    return 0
