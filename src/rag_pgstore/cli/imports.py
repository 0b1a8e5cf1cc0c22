"""``rag-pgstore import SOURCE ... --into COLLECTION``: vectors from another store, without
embedding them again; resumable, verified at the end.

The target collection is created when missing, with the dimension of the source's vectors.
Progress (rows and rows/s) is shown on a terminal; the verification is printed (or, with
``--json``, the whole report), and a failed one exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from sqlalchemy.engine import Engine

from rag_pgstore import embedded
from rag_pgstore.cli import models, output
from rag_pgstore.cli.progress import counting
from rag_pgstore.connect import make_engine
from rag_pgstore.errors import CollectionNotFoundError, InvalidInputError
from rag_pgstore.importers import (
    import_chunks,
    langchain_dump,
    langchain_pgvector,
    langchain_pgvectorstore,
    llamaindex_persist_dir,
    llamaindex_pgvector,
)
from rag_pgstore.importers.source import Source
from rag_pgstore.store import ChunkStore


def run(args: argparse.Namespace) -> int:
    # The source database: --from-url, else the target's (the embedded server without one).
    engine = None
    if args.kind != "file":
        engine = make_engine(args.from_url or args.database_url or embedded.start().url)
    try:
        return _run(args, _source(args, engine))
    finally:
        if engine is not None:
            engine.dispose()


def _run(args: argparse.Namespace, source: Source) -> int:
    store, created = _target(args, source)
    # A collection made now has imported nothing, whatever an earlier one of its name did.
    restart = args.restart or created
    try:
        report = counting(
            "import",
            lambda show: import_chunks(
                store, source, batch_size=args.batch, restart=restart, progress=show
            ),
            quiet=args.json,
        )
    finally:
        store.close()
    values: dict[str, Any] = {**dataclasses.asdict(report), "verified": report.verified}
    if args.json:
        output.fields(values, as_json=True)
    else:
        output.fields(
            {
                "source": report.source,
                "collection": report.collection,
                "imported": f"{report.rows:,} rows ({report.written:,} changed)"
                + (
                    f", after {report.resumed_after:,} from an earlier run"
                    if report.resumed_after
                    else ""
                ),
                "verified": f"{'yes' if report.verified else 'NO'}: {report.found:,} of "
                f"{report.source_rows:,} source rows found, checksum {report.source_checksum} "
                f"/ {report.collection_checksum}",
            },
            as_json=False,
        )
    if not report.verified:
        output.error(
            "the collection does not match the source: rows changed in place, or added with "
            "keys before the last one imported, are not read again; run with --restart to "
            "read the whole source again"
        )
        return 1
    return 0


def _source(args: argparse.Namespace, engine: Engine | None) -> Source:
    kind = args.kind
    if kind == "file" or engine is None:
        return (
            llamaindex_persist_dir(args.path) if args.path.is_dir() else langchain_dump(args.path)
        )
    if kind == "langchain-postgres":
        return langchain_pgvector(engine, args.collection_name, schema=args.schema)
    if kind == "langchain-pgvectorstore":
        return langchain_pgvectorstore(
            engine,
            args.table,
            schema=args.schema,
            id_column=args.id_column,
            content_column=args.content_column,
            embedding_column=args.embedding_column,
            metadata_json_column=args.metadata_json_column or None,
            metadata_columns=[
                c.strip() for c in (args.metadata_columns or "").split(",") if c.strip()
            ],
        )
    return llamaindex_pgvector(engine, args.table, schema=args.schema)


def _target(args: argparse.Namespace, source: Source) -> tuple[ChunkStore, bool]:
    """The collection to import into, made with the source's dimension when missing (then
    ``True``)."""
    try:
        return models.open_store(args), False
    except CollectionNotFoundError:
        pass
    first = next(iter(source.pages(None, 1)), None)
    if first is None or not first.chunks:
        raise InvalidInputError("the source holds no rows: nothing to import")
    store = ChunkStore.from_url(
        args.database_url,
        collection=args.collection,
        dim=len(first.chunks[0].embedding),
        create_extension=args.create_extension,
    )
    return store, True
