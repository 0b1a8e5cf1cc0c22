"""Add, inspect and remove table syncs: the sync's SQL objects and its record.

``add_sync`` creates the queue, the trigger function and the source table's trigger, and
records the sync, in one transaction (a role that may not create a trigger on the table
leaves nothing behind). The work itself, backfill and drain, is in :mod:`.worker`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rag_pgstore import driver
from rag_pgstore.driver.steps import Execute, Fetch, Plan
from rag_pgstore.errors import DatabaseError, SchemaError
from rag_pgstore.importers.tables import check_layout, unique_key
from rag_pgstore.store import ChunkStore
from rag_pgstore.sync import objects as ob
from rag_pgstore.sync.spec import TableSync

__all__ = [
    "SyncStatus",
    "Target",
    "add_sync",
    "remove_sync",
    "retry_parked",
    "spec_of",
    "sync_status",
    "tables",
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


Target = ChunkStore | Engine


def on(target: Target, schema: str | None) -> tuple[Callable[[Any], Any], str]:
    """How to run a plan on ``target`` and in which schema: a store's own, or an engine's
    (``schema``, default ``public``)."""
    if isinstance(target, ChunkStore):
        return target.run_plan, schema or target.collection.schema
    return functools.partial(driver.run, target), schema or "public"


def tables(store: ChunkStore) -> tuple[sa.Table, sa.Table]:
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
    syncs, _ = tables(store)
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
        yield from ob.migrate(c.schema)
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
        yield Execute(ob.create_trigger(c.schema, sync.name, (schema, table), sync.id, watched))
        yield Execute(sa.insert(syncs).values(**row))

    store.run_plan(plan)


def current(store: ChunkStore) -> None:
    """Make sure the schema's sync objects are the version this code works with, migrating
    older ones (a worker of a newer release runs first after an upgrade)."""
    schema = store.collection.schema
    found: int = store.run_plan(lambda: ob.version_of(schema))
    if found in (0, ob.VERSION):
        return  # none yet (``spec_of`` says so), or current
    if found > ob.VERSION:
        raise ob.newer(schema, found)
    try:
        store.run_plan(lambda: ob.migrate(schema))
    except DatabaseError as exc:
        if exc.sqlstate != "42501":
            raise
        raise SchemaError(
            f"expected the sync objects of schema {schema!r} at version {ob.VERSION}, got "
            f"{found}, and this role may not upgrade them ({exc}); run `rag-pgstore sync run` "
            "once as the role that made them (it ran `sync add`)"
        ) from exc


def remove_sync(target: Target, name: str, *, schema: str | None = None) -> None:
    """Drop the sync's trigger, its queued changes and its record; the collection stays.
    ``target`` is a store of the sync's schema, or an engine (``schema``: its schema)."""
    run, schema = on(target, schema)
    syncs, queue = ob.syncs_table(schema), ob.queue_table(schema)
    spec = spec_of(target, name, schema)

    def plan() -> Plan[None]:
        yield Execute(ob.drop_trigger(name, spec["source_schema"], spec["source_table"]))
        yield Execute(sa.delete(queue).where(queue.c.sync == name))
        yield Execute(sa.delete(syncs).where(syncs.c.name == name))

    run(plan)


def retry_parked(target: Target, name: str, *, schema: str | None = None) -> int:
    """Put the sync's parked changes back in the queue, due now with their attempts reset
    (after the cause of their last error is fixed); returns how many. ``last_error`` stays
    until a worker applies the change."""
    run, schema = on(target, schema)
    queue = ob.queue_table(schema)
    spec_of(target, name, schema)

    def plan() -> Plan[int]:
        count: int = yield Execute(
            sa.update(queue)
            .where(queue.c.sync == name, queue.c.parked)
            .values(parked=False, attempts=0, due_at=sa.func.now(), leased_until=None)
        )
        return count

    retried: int = run(plan)
    return retried


def spec_of(target: Target, name: str, schema: str | None = None) -> Mapping[str, Any]:
    run, schema = on(target, schema)
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
    run, schema = on(target, schema)
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
