"""The command line's arguments: one sub-parser per command, the common options on each."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rag_pgstore.cli import imports, ingest, manage, search, serve, sync

DEFAULT_COLLECTION = "docs"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rag-pgstore",
        description="Ingest documents into PostgreSQL + pgvector and search them.",
        epilog="exit codes: 0 done, 1 failed, 2 bad usage, 3 done but files were skipped, "
        "130 interrupted",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="default: $DATABASE_URL, else the embedded server",
    )
    common.add_argument(
        "--collection", default=DEFAULT_COLLECTION, help=f"default: {DEFAULT_COLLECTION}"
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument(
        "--no-create-extension",
        dest="create_extension",
        action="store_false",
        help="do not run CREATE EXTENSION vector (a role that may not; pgvector is there)",
    )
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument(
        "--embedder",
        choices=["local", "hash"],
        default=None,
        help="the model that embeds texts; default: the one the collection was built with, "
        "else local (all-MiniLM-L6-v2)",
    )
    model.add_argument(
        "--dim", type=_positive, default=256, help="dimensions of the hash embedder (default 256)"
    )
    tenant = argparse.ArgumentParser(add_help=False)
    tenant.add_argument(
        "--tenant",
        default=os.environ.get("RAG_PGSTORE_TENANT") or None,
        help="work within this tenant of a collection with tenancy (default: "
        "$RAG_PGSTORE_TENANT); a new collection ingested with it has tenancy",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    _reading(sub, common, model, tenant)
    _managing(sub, common, tenant)
    _serving(sub, common)
    _importing(sub, common)
    _syncing(sub, common, model)
    return parser


def _reading(
    sub: Any,
    common: argparse.ArgumentParser,
    model: argparse.ArgumentParser,
    tenant: argparse.ArgumentParser,
) -> None:
    p = sub.add_parser(
        "ingest",
        parents=[common, model, tenant],
        help="ingest files, folders (recursive) and globs; incremental",
        description="Ingest files, folders and globs. Documents are files, with their "
        "absolute path as id; only changed chunks are embedded again, and documents gone "
        "from an ingested folder are removed from the collection (--no-prune keeps them).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--max-tokens", type=_positive, default=512, help="chunk size (default 512)")
    p.add_argument("--overlap", type=_count, default=None, help="tokens shared by neighbours")
    p.add_argument(
        "--no-prune",
        dest="prune",
        action="store_false",
        help="keep documents whose file is gone from an ingested folder",
    )
    p.add_argument("--hidden", action="store_true", help="read hidden files and folders")
    p.add_argument("--follow", action="store_true", help="follow symlinks in folders")
    p.add_argument(
        "--replace-embedder",
        action="store_true",
        help="record another model than the collection was built with (stored vectors "
        "are not re-embedded: for the same model under another name)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="list every file left out, and why")
    p.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="neither read nor write the embedding cache (for a model cheaper than a lookup, "
        "such as --embedder hash)",
    )
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--bulk",
        action="store_true",
        help="load an empty collection in one transaction, indexes built once at the end "
        "(all or nothing; computed embeddings are cached either way, unless --no-cache)",
    )
    load.add_argument(
        "--writers",
        type=_positive,
        default=1,
        metavar="N",
        help="batches written at once, each on its own connection (default 1)",
    )
    p.set_defaults(run=ingest.run)

    p = sub.add_parser("search", parents=[common, model, tenant], help="search the collection")
    p.add_argument("query")
    p.add_argument("-k", type=_positive, default=5, help="results (default 5)")
    p.add_argument(
        "--filter",
        type=_json_filter,
        default=None,
        help='a metadata filter in JSON, e.g. \'{"source": {"$like": "%%guide%%"}}\'',
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("--hybrid", action="store_true", help="keywords and meaning, fused")
    how.add_argument(
        "--text", action="store_true", help="keywords only (BM25): needs no embedding model"
    )
    p.add_argument("--full", action="store_true", help="print whole chunks, not the match")
    p.set_defaults(run=search.run)


def _managing(sub: Any, common: argparse.ArgumentParser, tenant: argparse.ArgumentParser) -> None:
    p = sub.add_parser("collections", parents=[common], help="list the collections")
    p.set_defaults(run=manage.collections)
    p = sub.add_parser("stats", parents=[common], help="what the collection holds")
    p.set_defaults(run=manage.stats)
    p = sub.add_parser("doctor", parents=[common], help="check the server, schema and indexes")
    p.set_defaults(run=manage.doctor)

    p = sub.add_parser(
        "delete",
        parents=[common, tenant],
        help="delete documents: by file or folder, by id, or by metadata filter",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--path", nargs="+", help="files (their documents) or folders (every document under it)"
    )
    which.add_argument("--entity", nargs="+", help="document ids, exactly as stored")
    which.add_argument("--filter", type=_json_filter, help="a metadata filter in JSON")
    p.add_argument("-y", "--yes", action="store_true", help="allow --path / (everything)")
    p.set_defaults(run=manage.delete)

    p = sub.add_parser("drop", parents=[common], help="drop a collection and all its chunks")
    p.add_argument("name", metavar="COLLECTION")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(run=manage.drop)

    p = sub.add_parser(
        "keyword",
        parents=[common],
        help="switch how keywords are ranked (rewrites every row's keyword columns once)",
    )
    p.add_argument("mode", choices=["bm25", "ts_rank", "off"])
    p.set_defaults(run=manage.keyword)

    p = sub.add_parser("index", help="build or drop the ANN (HNSW) index")
    action = p.add_subparsers(required=True, metavar="ACTION", dest="action")
    create = action.add_parser("create", parents=[common], help="build (or rebuild) the HNSW index")
    create.add_argument("--m", type=_positive, default=16, help="HNSW m (default 16)")
    create.add_argument(
        "--ef-construction", type=_positive, default=64, help="HNSW ef_construction (default 64)"
    )
    action.add_parser("drop", parents=[common], help="drop it: searches become exact scans")
    p.set_defaults(run=manage.index)


def _serving(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the HTTP API and the search page (until Ctrl-C)",
        description="Serve the collections over HTTP: a JSON API under /v1, its docs at "
        "/docs, a search page at /, /healthz, /readyz and /metrics. --collection is the "
        "one the page opens first. Without an API key it listens on 127.0.0.1 only.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="default 8080")
    p.add_argument(
        "--api-key",
        action="append",
        metavar="SCOPE:SECRET",
        help=f"read:SECRET or write:SECRET, repeatable; prefer ${serve.KEYS_ENV} "
        "(comma-separated), which other users of this machine cannot see in `ps`",
    )
    p.add_argument(
        "--embedder",
        choices=["local", "hash", "none"],
        default=None,
        help="the model for collections that have not recorded one (those that have use "
        "theirs); default: local if installed, else none (vectors only)",
    )
    p.add_argument(
        "--dim", type=_positive, default=256, help="dimensions of the hash embedder (default 256)"
    )
    p.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=16 * 1024 * 1024,
        help="largest request body (default 16 MiB)",
    )
    p.add_argument(
        "--max-batch",
        type=_positive,
        default=1000,
        help="most chunks or documents per write request (default 1000)",
    )
    p.add_argument("--max-k", type=_positive, default=1000, help="most results per search")
    p.add_argument(
        "--max-offset", type=_positive, default=10_000, help="most results skipped (paging)"
    )
    p.add_argument(
        "--pool-size", type=_positive, default=10, help="database connections kept (default 10)"
    )
    p.add_argument(
        "--max-overflow",
        type=_count,
        default=10,
        help="connections opened beyond the pool under load (default 10)",
    )
    p.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    p.add_argument(
        "--shutdown-timeout",
        type=_positive,
        default=30,
        help="seconds in-flight requests get to finish at Ctrl-C/SIGTERM (default 30)",
    )
    p.set_defaults(run=serve.run)


def _importing(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "import",
        help="import vectors from another store (no embedding); resumable, verified",
        description="Import chunks with their vectors from langchain-postgres, LlamaIndex's "
        "PGVectorStore, or a LangChain / LlamaIndex file, into --into (created if missing). "
        "An interrupted import continues where it stopped; each run ends by checking counts "
        "and a checksum of ids and vectors against the source.",
    )
    kinds = p.add_subparsers(required=True, metavar="SOURCE", dest="kind")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--into", dest="collection", default=DEFAULT_COLLECTION, help="the target collection"
    )
    shared.add_argument("--batch", type=_positive, default=1000, help="rows per transaction")
    shared.add_argument(
        "--restart", action="store_true", help="read the source from its start again"
    )
    tables = argparse.ArgumentParser(add_help=False)
    tables.add_argument(
        "--from-url", help="the source database (default: --database-url, the target's)"
    )
    tables.add_argument("--schema", default="public", help="the source tables' schema")
    k = kinds.add_parser(
        "langchain-postgres",
        parents=[common, shared, tables],
        help="PGVector's langchain_pg_collection / langchain_pg_embedding tables",
    )
    k.add_argument("--collection-name", required=True, help="the PGVector collection")
    k = kinds.add_parser(
        "langchain-pgvectorstore",
        parents=[common, shared, tables],
        help="a PGVectorStore table (langchain-postgres v2)",
    )
    k.add_argument("--table", required=True)
    k.add_argument("--id-column", default="langchain_id")
    k.add_argument("--content-column", default="content")
    k.add_argument("--embedding-column", default="embedding")
    k.add_argument("--metadata-json-column", default="langchain_metadata")
    k.add_argument("--metadata-columns", help="comma-separated metadata columns")
    k = kinds.add_parser(
        "llama-index",
        parents=[common, shared, tables],
        help="a LlamaIndex PGVectorStore data_* table (plain or hybrid)",
    )
    k.add_argument("--table", required=True, help="e.g. data_my_index")
    k = kinds.add_parser(
        "file",
        parents=[common, shared],
        help="a LangChain InMemoryVectorStore dump, or a LlamaIndex persist directory",
    )
    k.add_argument("path", type=Path)
    p.set_defaults(run=imports.run)


def _syncing(sub: Any, common: argparse.ArgumentParser, model: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sync",
        help="keep an application table embedded: add, run, status, retry, remove",
        description="Keep a table's rows embedded in a collection as they change: a "
        "trigger queues changed rows, `sync run` backfills and applies them.",
    )
    action = p.add_subparsers(required=True, metavar="ACTION", dest="action")
    a = action.add_parser(
        "add", parents=[common, model], help="install the trigger; creates the collection"
    )
    a.add_argument("name", help="the sync's name")
    a.add_argument("--table", required=True, help="schema.table or table")
    a.add_argument("--id", required=True, help="its unique, non-null key column")
    a.add_argument("--text", required=True, help="columns that make the text, comma-separated")
    a.add_argument("--metadata", help="columns kept as metadata, comma-separated")
    a.add_argument("--max-tokens", type=_positive, default=256, help="chunk size (default 256)")
    a.set_defaults(run=sync.add)
    r = action.add_parser(
        "run", parents=[common, model], help="backfill, then apply the queued changes"
    )
    r.add_argument("name")
    r.add_argument("--watch", action="store_true", help="keep applying changes until Ctrl-C")
    r.add_argument("--poll", type=float, default=1.0, help="seconds between looks (--watch)")
    r.add_argument("--batch", type=_positive, default=100, help="rows per batch (default 100)")
    r.set_defaults(run=sync.run)
    s = action.add_parser("status", parents=[common], help="backfill, queue, failures, lag")
    s.add_argument("name", nargs="?")
    s.set_defaults(run=sync.status)
    t = action.add_parser(
        "retry", parents=[common], help="queue the parked (failed) changes again, due now"
    )
    t.add_argument("name")
    t.set_defaults(run=sync.retry)
    d = action.add_parser("remove", parents=[common], help="drop the trigger and the queue")
    d.add_argument("name")
    d.set_defaults(run=sync.remove)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {value!r}")
    return int(value)


def _json_filter(value: str) -> Any:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(value.rstrip()):
            problem = f"it ends early, after character {len(value)}: is a }} or ] missing?"
        else:
            near = value[max(0, exc.pos - 15) : exc.pos + 15]
            problem = f"{exc.msg} at character {exc.pos + 1} (near {near!r})"
        raise argparse.ArgumentTypeError(
            f"expected JSON with double-quoted names and strings, e.g. "
            f'\'{{"topic": "db"}}\'; {problem}'
        ) from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(
            f'expected a JSON object like {{"topic": "db"}}, got {type(parsed).__name__}'
        )
    return parsed


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return number


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return int(value)
