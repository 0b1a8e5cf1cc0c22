"""The work of a table sync: the backfill, and draining the queue of changes.

``backfill`` embeds every existing row in key order, page by page, recording how far it got
after each page; ``drain`` works the queue of changes. Both go through the pipeline, so a
row whose text did not change costs one read, and a text embedded before (a crash, a failed
batch, a row changed back) comes from the embedding cache.
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

from rag_pgstore.chunking import TokenChunker
from rag_pgstore.driver.steps import Execute, Fetch, Plan
from rag_pgstore.errors import DatabaseUnavailableError, RagPgStoreError, SchemaError
from rag_pgstore.importers.tables import typed_key
from rag_pgstore.pipeline import Document, Pipeline
from rag_pgstore.store import ChunkStore
from rag_pgstore.sync import objects as ob
from rag_pgstore.sync.manage import current, spec_of, tables

__all__ = ["DrainReport", "backfill", "backfill_remaining", "drain", "watch"]


@dataclass(frozen=True)
class DrainReport:
    applied: int  # source rows whose changes reached the collection
    failed: int  # rows that failed this time (retried later, or parked)


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

    def page(self, after: str | None, size: int | None) -> sa.Select[Any]:
        """The next ``size`` rows after the key ``after`` (all of them: ``None``)."""
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


class _LeaseLost(Exception):
    """Another worker holds what this one was working on (it stalled past its lease)."""


class _Heartbeat:
    """Keeps a lease while work runs long: ``renew`` (one short statement, true while the
    lease is still this worker's) runs from the pipeline's progress callback, between its
    steps (an embedding call, a write), at most every quarter lease, and once more whenever
    ``beat(force=True)`` asks. A lost lease stops the work before its next write."""

    def __init__(self, lease: float, renew: Callable[[], bool]) -> None:
        self._every = lease / 4
        self._renew = renew
        self._last = time.monotonic()

    def beat(self, _report: object = None, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < self._every:
            return
        if not self._renew():
            raise _LeaseLost
        self._last = time.monotonic()


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
    current(store)
    spec = spec_of(store, name)
    if spec["backfill_done"]:
        return 0
    source = _Source(spec)
    syncs, _ = tables(store)
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


def backfill_remaining(store: ChunkStore, name: str) -> int:
    """How many source rows the backfill has still to read (0 once it is done): an exact
    count of the rows past its watermark, one scan of the source's key index, for a progress
    bar's total and ETA."""
    spec = spec_of(store, name)
    if spec["backfill_done"]:
        return 0
    source = _Source(spec)
    remaining = sa.select(sa.func.count()).select_from(
        source.page(spec["backfill_after"], None).subquery()
    )
    rows = store.run_plan(functools.partial(_fetch, remaining))
    return int(next(iter(rows[0].values())))


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
    syncs, queue = tables(store)
    batch_size, lease_seconds = size, lease
    renew = functools.partial(_renew_backfill, syncs, name, me, lease)
    heart = _Heartbeat(lease, lambda: bool(store.run_plan(renew)))
    done = 0
    while True:
        rows = store.run_plan(functools.partial(_fetch, source.page(after, batch_size)))
        if rows:
            try:
                pipeline.ingest([source.document(r) for r in rows], progress=heart.beat)
            except DatabaseUnavailableError:
                raise
            except _LeaseLost:
                raise _lost_backfill(name, lease_seconds) from None
            except RagPgStoreError as exc:
                _fatal(exc)
                _one_by_one(store, pipeline, source, queue=queue, name=name, rows=rows, heart=heart)
            after = str(rows[-1]["rag_pgstore_key"])
            done += len(rows)
        finished = len(rows) < batch_size
        moved = store.run_plan(
            functools.partial(
                _advance, syncs, name, me, after=after, finished=finished, lease=lease_seconds
            )
        )
        if not moved:
            raise _lost_backfill(name, lease_seconds)
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


def _lost_backfill(name: str, lease: float) -> SchemaError:
    return SchemaError(
        f"sync {name!r} lost its backfill lease (this worker stalled for longer than {lease:g} s "
        "and another took over, or the sync was removed); run it again"
    )


def _renew_backfill(syncs: sa.Table, name: str, me: str, lease: float) -> Plan[bool]:
    rows = yield Fetch(
        sa.update(syncs)
        .where(syncs.c.name == name, syncs.c.backfill_owner == me)
        .values(backfill_until=ob.lease_for(lease))
        .returning(syncs.c.name)
    )
    return bool(rows)


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
    heart: _Heartbeat,
) -> None:
    """A page that failed, row by row: the rows that fail alone go to the queue with their
    error (as a first failed attempt), the others are written. When every row of a page of
    several fails, it is the model or the store, not the rows: stop (the page is not done)."""
    failures: list[tuple[Mapping[str, Any], RagPgStoreError]] = []
    for row in rows:
        try:
            pipeline.ingest([source.document(row)], progress=heart.beat)
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
    that dies leaves its lease to expire after ``lease_seconds``; a live one renews it as
    its batch goes (between the pipeline's steps), and one that stalled past it and lost a
    row to another worker drops its batch before writing.
    A configuration error (the collection gone, another model) stops the drain instead, and
    so does a model that fails every row of a batch.
    """
    current(store)
    spec = spec_of(store, name)
    if not spec["backfill_done"]:
        return DrainReport(0, 0)
    source = _Source(spec)
    _, queue = tables(store)
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
            done, failures = _work(
                store,
                pipeline,
                source,
                queue,
                name,
                by_source=by_source,
                me=me,
                lease=lease_seconds,
                max_attempts=max_attempts,
                backoff=backoff,
            )
        except _LeaseLost:
            # Another worker took rows over while this one stalled: it applies them, from
            # their state now; this one lets go of the rest and claims again.
            store.run_plan(functools.partial(_release, queue, me))
            continue
        applied += done
        failed += failures
        if progress is not None:
            progress(applied)


def _work(
    store: ChunkStore,
    pipeline: Pipeline,
    source: _Source,
    queue: sa.Table,
    name: str,
    *,
    by_source: Mapping[str, Sequence[tuple[int, int]]],
    me: str,
    lease: float,
    max_attempts: int,
    backoff: float,
) -> tuple[int, int]:
    """Apply one claimed batch: all at once, or, when that fails, row by row (the rows that
    fail alone are retried later or parked). Returns (applied, failed)."""
    applied = failed = 0
    held = functools.partial(_renew_rows, queue, me, lease)
    try:
        _apply(store, pipeline, source, list(by_source), held=held, lease=lease)
    except DatabaseUnavailableError:
        raise
    except RagPgStoreError as exc:
        _fatal(exc)
        alone = list(by_source)  # find the rows that fail, apply the rest
    else:
        alone = []
        store.run_plan(functools.partial(_done, queue, name, _newest(by_source), me))
        applied += len(by_source)
    errors: list[RagPgStoreError] = []
    for source_id in alone:
        rows = by_source[source_id]
        try:
            _apply(store, pipeline, source, [source_id], held=held, lease=lease)
        except DatabaseUnavailableError:
            raise
        except RagPgStoreError as exc:
            _fatal(exc)
            errors.append(exc)
            ids = [queue_id for queue_id, _ in rows]
            store.run_plan(
                functools.partial(
                    _failed, queue, ids, exc, max_attempts=max_attempts, backoff=backoff, me=me
                )
            )
            failed += 1
        else:
            store.run_plan(functools.partial(_done, queue, name, _newest({source_id: rows}), me))
            applied += 1
    if len(alone) > 1 and len(errors) == len(alone):
        raise errors[-1]  # every row failed: the model or the store, not the rows
    return applied, failed


def _newest(by_source: Mapping[str, Sequence[tuple[int, int]]]) -> dict[str, int]:
    return {source_id: max(q for q, _ in rows) for source_id, rows in by_source.items()}


def _apply(
    store: ChunkStore,
    pipeline: Pipeline,
    source: _Source,
    ids: Sequence[str],
    *,
    held: Callable[[Sequence[str]], Plan[set[str]]],
    lease: float,
) -> None:
    """Bring the rows ``ids`` to their state now. The lease on them is renewed before they
    are read and while the pipeline works (:class:`_Heartbeat`), so a batch may run longer
    than the lease; one that lost a row to another worker stops before it writes."""
    heart = _Heartbeat(lease, lambda: store.run_plan(functools.partial(held, ids)) == set(ids))
    heart.beat(force=True)
    rows = store.run_plan(functools.partial(_fetch, source.rows(ids)))
    present = {str(r["rag_pgstore_key"]) for r in rows}
    if rows:
        pipeline.ingest([source.document(r) for r in rows], progress=heart.beat)
    gone = [i for i in ids if i not in present]
    if gone:
        heart.beat()
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


def _renew_rows(queue: sa.Table, me: str, lease: float, ids: Sequence[str]) -> Plan[set[str]]:
    """Extend this claim's lease on the rows ``ids``; the ids it still holds. A lease that
    ran out is still this claim's until another takes the row (its token is ours)."""
    q = queue.c
    rows = yield Fetch(
        sa.update(queue)
        .where(q.lease_token == me, q.source_id.in_(list(ids)))  # the lease index
        .values(leased_until=ob.lease_for(lease))
        .returning(q.source_id)
    )
    return {str(r[0]) for r in rows}


def _release(queue: sa.Table, me: str) -> Plan[None]:
    """Let go of what this claim still holds: due again at once, for any worker."""
    q = queue.c
    yield Execute(
        sa.update(queue).where(q.lease_token == me).values(leased_until=None, lease_token=None)
    )


def _done(queue: sa.Table, name: str, done: Mapping[str, int], me: str) -> Plan[None]:
    """The rows are applied as they are now: each one's changes up to the newest it was
    leased (``done``: source id -> queue id) go, its older failed or parked ones too; newer
    ones, queued meanwhile, stay for the next pass. One statement for the whole batch."""
    if not done:
        return
    applied = (
        sa.func.unnest(
            sa.literal(list(done), pg.ARRAY(sa.Text)),
            sa.literal(list(done.values()), pg.ARRAY(sa.BigInteger)),
        )
        .table_valued("source_id", "newest")
        .render_derived()
    )
    q = queue.c
    yield Execute(
        sa.delete(queue).where(
            q.sync == name,
            q.source_id == applied.c.source_id,
            q.id <= applied.c.newest,
            sa.or_(q.lease_token == me, q.leased_until.is_(None), q.parked),
        )
    )


def _failed(
    queue: sa.Table,
    ids: Sequence[int],
    exc: Exception,
    *,
    max_attempts: int,
    backoff: float,
    me: str,
) -> Plan[None]:
    """Another failed attempt for the leased rows ``ids``: due again after ``backoff *
    2**attempts`` seconds, parked once ``max_attempts`` failed. One statement."""
    q = queue.c
    delay = sa.literal(backoff) * sa.func.power(2, q.attempts)
    yield Execute(
        sa.update(queue)
        .where(q.id.in_(list(ids)), q.lease_token == me)
        .values(
            attempts=q.attempts + 1,
            last_error=_error(exc),
            leased_until=None,
            lease_token=None,
            due_at=sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, delay),
            parked=q.attempts + 1 >= max_attempts,
        )
    )


def watch(
    store: ChunkStore, name: str, embedder: Any, *, poll: float = 1.0, **options: Any
) -> None:
    """Drain forever, looking for new changes every ``poll`` seconds (until interrupted)."""
    while True:
        drain(store, name, embedder, **options)
        time.sleep(poll)
