"""Add, run, inspect and remove table syncs.

``add_sync`` creates the queue, the trigger function and the source table's trigger, and
records the sync, in one transaction (a role that may not create a trigger on the table
leaves nothing behind). ``backfill`` embeds every existing row in key order, page by page,
recording how far it got after each page; ``drain`` works the queue of changes. Both go
through the pipeline, so a row whose text did not change costs one read, and a text embedded
before (a crash, a failed batch, a row changed back) comes from the embedding cache.
"""

from __future__ import annotations

import decimal
import functools
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.engine import Engine

from rag_pgstore import driver
from rag_pgstore.chunking import TokenChunker
from rag_pgstore.driver.steps import Execute, Fetch, Plan
from rag_pgstore.errors import DatabaseUnavailableError, RagPgStoreError, SchemaError
from rag_pgstore.importers.tables import check_layout, typed_key, unique_key
from rag_pgstore.pipeline import Document, Pipeline
from rag_pgstore.store import ChunkStore
from rag_pgstore.sync import objects as ob
from rag_pgstore.sync.spec import TableSync

__all__ = [
    "DrainReport",
    "SyncStatus",
    "add_sync",
    "backfill",
    "drain",
    "remove_sync",
    "sync_status",
    "watch",
]

_ID_TYPES = ("int2", "int4", "int8", "text", "varchar", "bpchar", "uuid")


@dataclass(frozen=True)
class SyncStatus:
    """Where a sync stands: its backfill, and its queue (``pending`` due or waiting for a
    retry, ``in_flight`` leased by a worker, ``parked`` failed too often, with the last
    error); ``lag_seconds`` is the age of the oldest change not yet applied."""

    name: str
    collection: str
    source: str
    backfill_done: bool
    pending: int
    in_flight: int
    parked: int
    last_error: str | None
    lag_seconds: float | None


@dataclass(frozen=True)
class DrainReport:
    applied: int  # source rows whose changes reached the collection
    failed: int  # rows that failed this time (retried later, or parked)


Target = ChunkStore | Engine


def _on(target: Target, schema: str | None) -> tuple[Callable[[Any], Any], str]:
    """How to run a plan on ``target`` and in which schema: a store's own, or an engine's
    (``schema``, default ``public``)."""
    if isinstance(target, ChunkStore):
        return target.run_plan, schema or target.collection.schema
    return functools.partial(driver.run, target), schema or "public"


def _tables(store: ChunkStore) -> tuple[sa.Table, sa.Table]:
    schema = store.collection.schema
    return ob.syncs_table(schema), ob.queue_table(schema)


def add_sync(store: ChunkStore, sync: TableSync) -> None:
    """Create the sync's trigger and queue and record it; the backfill is :func:`backfill`.

    ``store`` is the collection the sync writes (``sync.collection``); the source table must
    be in the same database, with a unique, non-null id column of an integer, text or uuid
    type. Needs the right to create triggers on the source table (its owner, or the
    TRIGGER privilege) and tables and functions in the collection's schema.
    """
    c = store.collection
    if c.name != sync.collection:
        raise SchemaError(f"expected a store of collection {sync.collection!r}, got {c.name!r}")
    assert store.engine is not None, "a sync needs the store's sync engine"
    schema, table = sync.source
    wanted = (sync.id, *sync.text, *sync.metadata)
    found = check_layout(store.engine, schema, table, wanted, "the sync's source")
    if found[sync.id] not in _ID_TYPES:
        raise SchemaError(
            f"expected the id column {sync.id!r} to be an integer, text or uuid, got "
            f"{found[sync.id]}"
        )
    unique_key(store.engine, schema, table, sync.id)
    syncs, queue = _tables(store)
    row = {
        "name": sync.name,
        "collection": c.name,
        "source_schema": schema,
        "source_table": table,
        "id_column": sync.id,
        "id_type": found[sync.id],
        "text_columns": list(sync.text),
        "metadata_columns": list(sync.metadata),
        "max_tokens": sync.max_tokens,
    }
    watched = list(dict.fromkeys(wanted))

    def plan() -> Plan[None]:
        yield Execute(sa.schema.CreateTable(syncs, if_not_exists=True))
        yield Execute(sa.schema.CreateTable(queue, if_not_exists=True))
        for index in queue.indexes:
            yield Execute(sa.schema.CreateIndex(index, if_not_exists=True))
        existing = yield Fetch(
            sa.select(syncs.c.name, syncs.c.collection).where(
                sa.or_(syncs.c.name == sync.name, syncs.c.collection == c.name)
            )
        )
        for other, collection in existing:
            if other == sync.name:
                raise SchemaError(f"expected a new sync name, got {sync.name!r}, which exists")
            raise SchemaError(
                f"expected a collection no sync writes, got {collection!r}, which sync "
                f"{other!r} writes (its documents are that table's rows); use another collection"
            )
        yield Execute(ob.trigger_function(c.schema))
        yield Execute(ob.create_trigger(c.schema, sync.name, (schema, table), sync.id, watched))
        yield Execute(sa.insert(syncs).values(**row))

    store.run_plan(plan)


def remove_sync(target: Target, name: str, *, schema: str | None = None) -> None:
    """Drop the sync's trigger, its queued changes and its record; the collection stays.
    ``target`` is a store of the sync's schema, or an engine (``schema``: its schema)."""
    run, schema = _on(target, schema)
    syncs, queue = ob.syncs_table(schema), ob.queue_table(schema)
    spec = _spec(target, name, schema)

    def plan() -> Plan[None]:
        yield Execute(ob.drop_trigger(name, spec["source_schema"], spec["source_table"]))
        yield Execute(sa.delete(queue).where(queue.c.sync == name))
        yield Execute(sa.delete(syncs).where(syncs.c.name == name))

    run(plan)


def _spec(target: Target, name: str, schema: str | None = None) -> Mapping[str, Any]:
    run, schema = _on(target, schema)
    syncs = ob.syncs_table(schema)

    def plan() -> Plan[Mapping[str, Any] | None]:
        exists = yield Fetch(sa.select(sa.func.to_regclass(f"{syncs.schema}.{syncs.name}")))
        if exists[0][0] is None:
            return None
        rows = yield Fetch(sa.select(syncs).where(syncs.c.name == name))
        return rows[0]._mapping if rows else None

    found: Mapping[str, Any] | None = run(plan)
    if found is None:
        raise SchemaError(f"expected a sync named {name!r}, found none; `sync add` makes one")
    return found


def sync_status(
    target: Target, name: str | None = None, *, schema: str | None = None
) -> list[SyncStatus]:
    """The state of every sync of the schema (or of ``name``); ``target`` is a store of the
    schema, or an engine (``schema``: its schema, default ``public``)."""
    run, schema = _on(target, schema)
    syncs, queue = ob.syncs_table(schema), ob.queue_table(schema)

    def plan() -> Plan[list[SyncStatus]]:
        exists = yield Fetch(sa.select(sa.func.to_regclass(f"{syncs.schema}.{syncs.name}")))
        if exists[0][0] is None:
            return []
        where = syncs.c.name == name if name is not None else sa.true()
        specs = yield Fetch(sa.select(syncs).where(where).order_by(syncs.c.name))
        out = []
        for spec in specs:
            q = queue.c
            leased = q.leased_until >= sa.func.now()
            [counts] = yield Fetch(
                sa.select(
                    sa.func.count().filter(~q.parked & ~sa.func.coalesce(leased, False)),
                    sa.func.count().filter(~q.parked & sa.func.coalesce(leased, False)),
                    sa.func.count().filter(q.parked),
                    sa.func.extract(
                        "epoch", sa.func.now() - sa.func.min(q.enqueued_at).filter(~q.parked)
                    ),
                ).where(q.sync == spec.name)
            )
            error = yield Fetch(
                sa.select(q.last_error)
                .where(q.sync == spec.name, q.last_error.is_not(None))
                .order_by(q.id.desc())
                .limit(1)
            )
            out.append(
                SyncStatus(
                    name=spec.name,
                    collection=spec.collection,
                    source=f"{spec.source_schema}.{spec.source_table}",
                    backfill_done=spec.backfill_done,
                    pending=counts[0],
                    in_flight=counts[1],
                    parked=counts[2],
                    last_error=error[0][0] if error else None,
                    lag_seconds=float(counts[3]) if counts[3] is not None else None,
                )
            )
        return out

    found: list[SyncStatus] = run(plan)
    return found


# -- reading the source ------------------------------------------------------------------------


class _Source:
    """The source table of a recorded sync, as SQLAlchemy sees it."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec
        names = dict.fromkeys([spec["id_column"], *spec["text_columns"], *spec["metadata_columns"]])
        self.table = sa.table(
            spec["source_table"], *(sa.column(n) for n in names), schema=spec["source_schema"]
        )
        self.key, self.key_value = typed_key(self.table, spec["id_column"], spec["id_type"])
        self.columns = [self.table.c[n] for n in names]

    def page(self, after: str | None, size: int) -> sa.Select[Any]:
        statement = sa.select(self.key.label("rag_pgstore_key"), *self.columns).order_by(self.key)
        if after is not None:
            statement = statement.where(self.key > self.key_value(after))
        return statement.limit(size)

    def rows(self, ids: Sequence[str]) -> sa.Select[Any]:
        values = [self.key_value(i) for i in ids]
        return sa.select(self.key.label("rag_pgstore_key"), *self.columns).where(
            self.key.in_(values)
        )

    def document(self, row: Mapping[str, Any]) -> Document:
        texts = [row[c] for c in self.spec["text_columns"]]
        text = "\n\n".join(str(t) for t in texts if t is not None and str(t).strip())
        metadata = {c: _json_value(row[c]) for c in self.spec["metadata_columns"]}
        return Document(str(row["rag_pgstore_key"]), text, metadata)


def _json_value(value: Any) -> Any:
    """A column's value as JSON can hold it: numbers stay numbers (a NUMERIC price becomes a
    float), dates and UUIDs become their ISO or text form."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _fetch(statement: sa.Select[Any]) -> Plan[list[Mapping[str, Any]]]:
    rows = yield Fetch(statement)
    return [row._mapping for row in rows]


def _pipeline(store: ChunkStore, embedder: Any, spec: Mapping[str, Any], size: int) -> Pipeline:
    return Pipeline(
        store,
        embedder,
        chunker=TokenChunker(max_tokens=spec["max_tokens"]),
        batch_documents=max(1, size),
        batch_chunks=max(500, size * 4),
        retries=1,  # the queue retries a failed row later, with its own backoff
    )


# -- backfill ----------------------------------------------------------------------------------


def backfill(
    store: ChunkStore,
    name: str,
    embedder: Any,
    *,
    batch_size: int = 100,
    lease_seconds: float = 300.0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embed every source row not yet backfilled, in key order; return how many were read.

    After each page the key it reached is recorded: an interrupted backfill continues there,
    and the pipeline skips what an earlier attempt wrote (nothing is embedded twice). One
    worker backfills at a time (it holds the sync's backfill lease, renewed every page);
    another returns 0 at once. A row that fails on its own is queued with its error, for
    :func:`drain` to retry and, in the end, park: it does not stop the backfill.
    """
    spec = _spec(store, name)
    if spec["backfill_done"]:
        return 0
    source = _Source(spec)
    syncs, _ = _tables(store)
    pipeline = _pipeline(store, embedder, spec, batch_size)
    me = uuid.uuid4().hex
    after = store.run_plan(functools.partial(_lease_backfill, syncs, name, me, lease_seconds))
    if after is False:
        return 0  # another worker is backfilling
    assert after is None or isinstance(after, str)
    try:
        return _backfill_pages(
            store, pipeline, source, name=name, me=me, after=after, size=batch_size,
            lease=lease_seconds, progress=progress,
        )  # fmt: skip
    except BaseException:
        # Let the next run (this worker's or another's) take over at once.
        release = (
            sa.update(syncs)
            .where(syncs.c.name == name, syncs.c.backfill_owner == me)
            .values(backfill_until=None, backfill_owner=None)
        )
        store.run_plan(functools.partial(_execute, release))
        raise


def _backfill_pages(
    store: ChunkStore,
    pipeline: Pipeline,
    source: _Source,
    *,
    name: str,
    me: str,
    after: str | None,
    size: int,
    lease: float,
    progress: Callable[[int], None] | None,
) -> int:
    syncs, queue = _tables(store)
    batch_size, lease_seconds = size, lease
    done = 0
    while True:
        rows = store.run_plan(functools.partial(_fetch, source.page(after, batch_size)))
        if rows:
            try:
                pipeline.ingest([source.document(r) for r in rows])
            except DatabaseUnavailableError:
                raise
            except RagPgStoreError as exc:
                _fatal(exc)
                _one_by_one(store, pipeline, source, queue=queue, name=name, rows=rows)
            after = str(rows[-1]["rag_pgstore_key"])
            done += len(rows)
        finished = len(rows) < batch_size
        moved = store.run_plan(
            functools.partial(
                _advance, syncs, name, me, after=after, finished=finished, lease=lease_seconds
            )
        )
        if not moved:
            raise SchemaError(
                f"sync {name!r} lost its backfill lease (a page took longer than "
                f"{lease_seconds:g} s, or the sync was removed); run it again"
            )
        if progress is not None:
            progress(done)
        if finished:
            return done


def _lease_backfill(syncs: sa.Table, name: str, me: str, lease: float) -> Plan[str | bool | None]:
    """Take the backfill lease; where to start, or ``False`` if another worker holds it."""
    rows = yield Fetch(
        sa.update(syncs)
        .where(
            syncs.c.name == name,
            ~syncs.c.backfill_done,
            sa.or_(syncs.c.backfill_until.is_(None), syncs.c.backfill_until < sa.func.now()),
        )
        .values(backfill_owner=me, backfill_until=ob.lease_for(lease))
        .returning(syncs.c.backfill_after)
    )
    return rows[0][0] if rows else False


def _advance(
    syncs: sa.Table, name: str, me: str, *, after: str | None, finished: bool, lease: float
) -> Plan[bool]:
    """Record the page (only while this worker holds the lease), and renew the lease."""
    rows = yield Fetch(
        sa.update(syncs)
        .where(syncs.c.name == name, syncs.c.backfill_owner == me)
        .values(
            backfill_after=after,
            backfill_done=finished,
            backfill_until=None if finished else ob.lease_for(lease),
        )
        .returning(syncs.c.name)
    )
    return bool(rows)


def _one_by_one(
    store: ChunkStore,
    pipeline: Pipeline,
    source: _Source,
    *,
    queue: sa.Table,
    name: str,
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """A page that failed, row by row: the rows that fail alone go to the queue with their
    error (as a first failed attempt), the others are written. When every row of a page of
    several fails, it is the model or the store, not the rows: stop (the page is not done)."""
    failures: list[tuple[Mapping[str, Any], RagPgStoreError]] = []
    for row in rows:
        try:
            pipeline.ingest([source.document(row)])
        except DatabaseUnavailableError:
            raise
        except RagPgStoreError as exc:
            _fatal(exc)
            failures.append((row, exc))
    if len(failures) == len(rows) > 1:
        raise failures[-1][1]
    for row, error in failures:
        failure = _queued_failure(queue, name, str(row["rag_pgstore_key"]), error)
        store.run_plan(functools.partial(_execute, failure))


def _queued_failure(queue: sa.Table, name: str, source_id: str, exc: Exception) -> Any:
    return sa.insert(queue).values(
        sync=name, source_id=source_id, attempts=1, last_error=_error(exc)
    )


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _fatal(exc: RagPgStoreError) -> None:
    """Errors no row causes (the collection gone, another model recorded): stop, rather
    than fail, retry and park every row in turn."""
    if isinstance(exc, SchemaError):
        raise exc


def _execute(statement: Any) -> Plan[None]:
    yield Execute(statement)


# -- the queue ---------------------------------------------------------------------------------


def drain(
    store: ChunkStore,
    name: str,
    embedder: Any,
    *,
    batch_size: int = 100,
    max_attempts: int = 5,
    backoff: float = 2.0,
    lease_seconds: float = 300.0,
    progress: Callable[[int], None] | None = None,
) -> DrainReport:
    """Apply queued changes until none is due: each claimed source row is read again (its
    state now, not at the change), re-ingested if it exists, its chunks deleted if not.

    Several workers, in processes or on machines of their own, can drain one sync at once:
    a claim takes due rows ``FOR UPDATE SKIP LOCKED`` and leases them under a token of its
    own, and never takes a source row another worker holds. Until the backfill is done it
    applies nothing (a change to a row the backfill is reading could otherwise be undone by
    it), and returns at once. A row that fails is retried after ``backoff * 2**n`` seconds,
    and parked with its error after ``max_attempts``; ``sync_status`` shows it. A worker
    that dies leaves its lease to expire after ``lease_seconds``; a batch must take less.
    A configuration error (the collection gone, another model) stops the drain instead, and
    so does a model that fails every row of a batch.
    """
    spec = _spec(store, name)
    if not spec["backfill_done"]:
        return DrainReport(0, 0)
    source = _Source(spec)
    _, queue = _tables(store)
    pipeline = _pipeline(store, embedder, spec, batch_size)
    applied = failed = 0
    while True:
        me = uuid.uuid4().hex
        claimed = store.run_plan(
            functools.partial(_claim, queue, name, batch_size, lease_seconds, me)
        )
        if not claimed:
            return DrainReport(applied, failed)
        by_source: dict[str, list[tuple[int, int]]] = {}
        for queue_id, source_id, attempts in claimed:
            by_source.setdefault(source_id, []).append((queue_id, attempts))
        try:
            _apply(store, pipeline, source, list(by_source))
        except DatabaseUnavailableError:
            raise
        except RagPgStoreError as exc:
            _fatal(exc)
            alone = list(by_source)  # find the rows that fail, apply the rest
        else:
            alone = []
            for source_id, rows in by_source.items():
                store.run_plan(functools.partial(_done, queue, name, source_id, rows, me))
            applied += len(by_source)
        errors: list[RagPgStoreError] = []
        for source_id in alone:
            rows = by_source[source_id]
            try:
                _apply(store, pipeline, source, [source_id])
            except DatabaseUnavailableError:
                raise
            except RagPgStoreError as exc:
                _fatal(exc)
                errors.append(exc)
                store.run_plan(
                    functools.partial(
                        _failed, queue, rows, exc, max_attempts=max_attempts, backoff=backoff, me=me
                    )
                )
                failed += 1
            else:
                store.run_plan(functools.partial(_done, queue, name, source_id, rows, me))
                applied += 1
        if len(alone) > 1 and len(errors) == len(alone):
            raise errors[-1]  # every row failed: the model or the store, not the rows
        if progress is not None:
            progress(applied)


def _apply(store: ChunkStore, pipeline: Pipeline, source: _Source, ids: Sequence[str]) -> None:
    rows = store.run_plan(functools.partial(_fetch, source.rows(ids)))
    present = {str(r["rag_pgstore_key"]) for r in rows}
    if rows:
        pipeline.ingest([source.document(r) for r in rows])
    gone = [i for i in ids if i not in present]
    if gone:
        store.delete_entities(gone)


def _claim(
    queue: sa.Table, name: str, limit: int, lease: float, me: str
) -> Plan[list[tuple[int, str, int]]]:
    # Claims of one sync take turns (a short lock), so a claim sees every lease before it.
    turn = sa.func.hashtext(sa.literal(f"rag_pgstore_sync:{name}", sa.Text))
    yield Fetch(sa.select(sa.func.pg_advisory_xact_lock(turn)))
    rows = yield Fetch(ob.claim(queue, name, limit * 4))
    picked = list(dict.fromkeys(source_id for _, source_id, _ in rows))[:limit]
    if not picked:
        return []
    # Every due change of the picked rows, not only those fetched: one pass applies them all.
    q = queue.c
    taken = yield Fetch(
        sa.update(queue)
        .where(
            q.sync == name,
            q.source_id.in_(picked),
            ~q.parked,
            q.due_at <= sa.func.now(),
            sa.or_(q.leased_until.is_(None), q.leased_until < sa.func.now()),
        )
        .values(leased_until=ob.lease_for(lease), lease_token=me)
        .returning(q.id, q.source_id, q.attempts)
    )
    return [(int(i), str(s), int(a)) for i, s, a in taken]


def _done(
    queue: sa.Table, name: str, source_id: str, rows: Sequence[tuple[int, int]], me: str
) -> Plan[None]:
    """The row is applied as it is now: its leased changes go, and so do its older failed or
    parked ones (newer ones, queued meanwhile, stay for the next pass)."""
    newest = max(queue_id for queue_id, _ in rows)
    q = queue.c
    yield Execute(
        sa.delete(queue).where(
            q.sync == name,
            q.source_id == source_id,
            q.id <= newest,
            sa.or_(q.lease_token == me, q.leased_until.is_(None), q.parked),
        )
    )


def _failed(
    queue: sa.Table,
    rows: Sequence[tuple[int, int]],
    exc: Exception,
    *,
    max_attempts: int,
    backoff: float,
    me: str,
) -> Plan[None]:
    for queue_id, attempts in rows:
        delay = backoff * 2**attempts
        yield Execute(
            sa.update(queue)
            .where(queue.c.id == queue_id, queue.c.lease_token == me)
            .values(
                attempts=attempts + 1,
                last_error=_error(exc),
                leased_until=None,
                lease_token=None,
                due_at=sa.func.now() + sa.literal(_seconds(delay), sa.Interval),
                parked=attempts + 1 >= max_attempts,
            )
        )


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


def watch(
    store: ChunkStore, name: str, embedder: Any, *, poll: float = 1.0, **options: Any
) -> None:
    """Drain forever, looking for new changes every ``poll`` seconds (until interrupted)."""
    while True:
        drain(store, name, embedder, **options)
        time.sleep(poll)


del pg
