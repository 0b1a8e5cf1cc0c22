"""``rag-pgstore sync add | run | status | retry | remove``: keep an application table embedded.

``add`` installs the trigger (and creates the collection, with the embedder's dimension,
when it does not exist); ``run`` backfills what is not yet embedded, then applies the queued
changes (``--watch``: and keeps doing so until Ctrl-C); ``status`` shows each sync's
backfill, queue, parked failures and lag; ``retry`` queues the parked changes again;
``remove`` drops the trigger and the queue.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.engine import Engine

from rag_pgstore import embedded
from rag_pgstore.cli import models, output
from rag_pgstore.cli.progress import counting
from rag_pgstore.connect import make_engine
from rag_pgstore.errors import CollectionNotFoundError, SchemaError
from rag_pgstore.ops import registry
from rag_pgstore.store import ChunkStore
from rag_pgstore.sync import (
    TableSync,
    add_sync,
    backfill,
    backfill_remaining,
    drain,
    remove_sync,
    retry_parked,
    sync_status,
)

T = TypeVar("T")


def add(args: argparse.Namespace) -> int:
    sync = TableSync(
        args.name,
        table=args.table,
        id=args.id,
        text=args.text,
        metadata=args.metadata or (),
        collection=args.collection,
        max_tokens=args.max_tokens,
    )
    created = False
    try:
        store = models.open_store(args)
    except CollectionNotFoundError:
        name, dim = models.for_new_collection(args)
        store = models.open_store(args, create_dim=dim)
        created = True
        c = store.collection
        # Recorded now, so `sync run` embeds with the model this command was given.
        store.run_plan(lambda: registry.claim_embedder(c, name))
    try:
        add_sync(store, sync)
    except BaseException:
        if created:  # a refused sync leaves nothing behind, the new collection included
            store.drop()
        raise
    finally:
        store.close()
    output.note(
        f"sync {sync.name!r}: {sync.table} -> collection {sync.collection!r}; "
        f"`rag-pgstore sync run {sync.name}` backfills it and applies changes"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    store = _store_of(args)
    try:
        embedder = models.for_collection(args, store, models.recorded_embedder(store))
        rows = counting(
            "backfill",
            lambda show: backfill(store, args.name, embedder, batch_size=args.batch, progress=show),
            quiet=args.json,
            total=None if args.json else backfill_remaining(store, args.name),
        )
        applied = failed = 0
        while True:
            report = drain(store, args.name, embedder, batch_size=args.batch)
            applied, failed = applied + report.applied, failed + report.failed
            if not args.watch:
                break
            time.sleep(args.poll)
        (status,) = sync_status(store, args.name)
    finally:
        store.close()
    output.fields(
        {
            "sync": args.name,
            "backfilled": rows,
            "changes_applied": applied,
            "failed": failed,
            "pending": status.pending,
            "parked": status.parked,
        },
        as_json=args.json,
    )
    return 0 if not status.parked else 3


def status(args: argparse.Namespace) -> int:
    found = _on_database(args, lambda engine: sync_status(engine, args.name))
    if args.name and not found:
        raise SchemaError(f"expected a sync named {args.name!r}, found none")
    rows = [
        {
            "sync": s.name,
            "collection": s.collection,
            "source": s.source,
            "backfill": "done" if s.backfill_done else "not done",
            "pending": s.pending,
            "in_flight": s.in_flight,
            "parked": s.parked,
            "lag_s": "-" if s.lag_seconds is None else f"{s.lag_seconds:.1f}",
            "last_error": s.last_error or "-",
        }
        for s in found
    ]
    if not rows and not args.json:
        output.note("no syncs yet; `rag-pgstore sync add NAME --table T --id ID --text COLS`")
    output.table(rows, as_json=args.json)
    return 0


def retry(args: argparse.Namespace) -> int:
    count = _on_database(args, lambda engine: retry_parked(engine, args.name))
    output.note(
        f"{count:,} parked change{'s' if count != 1 else ''} of {args.name!r} queued again; "
        f"`rag-pgstore sync run {args.name}` applies them"
    )
    return 0


def remove(args: argparse.Namespace) -> int:
    _on_database(args, lambda engine: remove_sync(engine, args.name))
    output.note(f"sync {args.name!r} removed (its collection stays)")
    return 0


def _store_of(args: argparse.Namespace) -> ChunkStore:
    """The collection the named sync writes."""
    found = _on_database(args, lambda engine: sync_status(engine, args.name))
    if not found:
        raise SchemaError(f"expected a sync named {args.name!r}, found none; `sync add` makes it")
    args.collection = found[0].collection
    return models.open_store(args)


def _on_database(args: argparse.Namespace, work: Callable[[Engine], T]) -> T:
    """``work`` on an engine of the syncs' database, closed again after."""
    engine = make_engine(args.database_url or embedded.start().url)
    try:
        return work(engine)
    finally:
        engine.dispose()
