"""Statements that write: the COPY targets, the existence probe, the merge, deletes, locks.

Pure builders: none of them touches a connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.sql.elements import ColumnElement

from rag_pgstore.schema import WRITTEN_COLUMNS, Collection
from rag_pgstore.sql.search import any_of

__all__ = [
    "any_exist",
    "delete",
    "held",
    "lock_key",
    "lock_table",
    "raise_settings",
    "set_local_many",
    "stage_copy",
    "table_copy",
    "truncate",
    "upsert_from_stage",
    "write_lock",
]


def delete(
    collection: Collection, where: ColumnElement[bool], *, ordered: bool = True
) -> sa.Delete:
    """Delete the rows matching ``where``, locking them in ``chunk_id`` order first.

    Writes lock rows in ``chunk_id`` order too, so a delete and an upsert of overlapping ids
    wait for each other instead of deadlocking. ``ordered=False`` (emptying the whole table)
    skips the sort; a deadlock there is retried by the driver.
    """
    table = collection.table
    scoped = collection.scoped(where)
    if not ordered:
        return sa.delete(table).where(scoped)
    locked = sa.select(table.c.chunk_id).where(scoped).order_by(table.c.chunk_id).with_for_update()
    # Within the tenant again: another tenant may hold the same chunk ids.
    return sa.delete(table).where(*_own(collection), table.c.chunk_id.in_(locked.scalar_subquery()))


def _own(collection: Collection) -> tuple[ColumnElement[bool], ...]:
    own = collection.scope()
    return () if own is None else (own,)


def set_local_many(settings: dict[str, str]) -> sa.Select[Any]:
    """``set_config(name, value, true)`` for each setting, in one round trip.

    The third argument makes each behave like ``SET LOCAL``: gone when the transaction ends, so
    nothing leaks into a pooled connection. Names and values are bound parameters.
    """
    return sa.select(*(sa.func.set_config(name, value, True) for name, value in settings.items()))


def raise_settings(settings: dict[str, str]) -> sa.Select[Any]:
    """Like :func:`set_local_many` for memory settings, but never lowering one: each becomes
    ``value`` only where the current setting is smaller (``pg_size_bytes`` compares them)."""
    raised = []
    for name, value in settings.items():
        current = sa.func.current_setting(name)
        wanted = sa.literal(value, sa.Text)
        larger = sa.case(
            (sa.func.pg_size_bytes(current) >= sa.func.pg_size_bytes(wanted), current),
            else_=wanted,
        )
        raised.append(sa.func.set_config(name, larger, True))
    return sa.select(*raised)


def lock_key(scope: str) -> ColumnElement[int]:
    """The advisory-lock key for ``scope``: a 64-bit hash of a name, computed by the server."""
    return sa.func.hashtextextended(sa.literal(f"rag_pgstore:{scope}", sa.Text), 0)


def write_lock(collection: Collection, *, exclusive: bool) -> sa.Select[Any]:
    """Take the collection's write lock for this transaction.

    Every write takes it shared, so writers run side by side; a write of several batches
    takes it alone (see ``writes._upsert``).
    """
    lock = sa.func.pg_advisory_xact_lock if exclusive else sa.func.pg_advisory_xact_lock_shared
    key = f"write:{collection.schema}.{collection.name}"
    if collection.tenant is None:
        return sa.select(lock(lock_key(key)))
    # A tenant's rows never meet another tenant's, so its writers order themselves on a
    # lock of their own; the collection's, shared, still waits for a whole-table writer.
    return sa.select(
        sa.func.pg_advisory_xact_lock_shared(lock_key(key)),
        lock(lock_key(f"{key}:{collection.tenant}")),
    )


def lock_table(collection: Collection) -> sa.DDL:
    """``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE``: readers of the table wait until commit."""
    return sa.DDL(  # type: ignore[no-untyped-call]
        "LOCK TABLE %(fullname)s IN ACCESS EXCLUSIVE MODE"
    ).against(collection.table)


def held(collection: Collection, at_most: int) -> sa.Select[Any]:
    """How many rows the table holds, counting at most ``at_most`` of them."""
    some = sa.select(collection.table.c.chunk_id).where(*_own(collection)).limit(at_most).subquery()
    return sa.select(sa.func.count()).select_from(some)


def table_copy(collection: Collection) -> sql.Composed:
    """``COPY`` new rows straight into the collection's table."""
    return _copy(sql.Identifier(collection.schema, collection.name), WRITTEN_COLUMNS)


def stage_copy() -> sql.Composed:
    """``COPY`` rows that replace existing ones into the staging table, for the merge."""
    return _copy(sql.Identifier("rag_pgstore_stage"), WRITTEN_COLUMNS)


def _copy(table: sql.Identifier, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def any_exist(collection: Collection, ids: Sequence[str]) -> sa.Select[bool, bool]:
    """Whether the table holds any of ``ids`` (index probes only), and whether row-level
    security applies to this role (PostgreSQL refuses a COPY into such a table)."""
    table = collection.table
    exists = sa.exists().where(*_own(collection), table.c.chunk_id == any_of(ids))
    if collection.tenant is None:
        return sa.select(exists, sa.literal_column("false", sa.Boolean))
    name = f"{collection.schema}.{collection.name}"
    return sa.select(exists, sa.func.row_security_active(sa.literal(name, sa.Text)))


def upsert_from_stage(collection: Collection) -> sa.Insert:
    """Merge the staged rows into the table, in ``chunk_id`` order, rewriting only changed rows.

    Inserting in ``chunk_id`` order makes every writer take row locks in the same order, so
    concurrent upserts of overlapping ids wait for each other instead of deadlocking. The
    caller stages each id at most once.
    """
    table, stage = collection.table, collection.staging
    source = sa.select(*(stage.c[name] for name in WRITTEN_COLUMNS)).order_by(stage.c.chunk_id)
    stmt = pg.insert(table).from_select(list(WRITTEN_COLUMNS), source)
    updated = [name for name in WRITTEN_COLUMNS if name != "chunk_id"]
    changed = sa.tuple_(*(table.c[name] for name in updated)).is_distinct_from(
        sa.tuple_(*(stmt.excluded[name] for name in updated))
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[table.c[name] for name in collection.key_columns],
        set_={**{name: stmt.excluded[name] for name in updated}, "updated_at": sa.func.now()},
        where=changed,
    )
    # SQLAlchemy only promises rowcount for UPDATE/DELETE unless asked to keep it.
    return upsert.execution_options(preserve_rowcount=True)


def truncate(table: sa.Table) -> sa.DDL:
    """``TRUNCATE`` ``table`` (the staging table between batches: O(1), no dead rows left)."""
    # DDL() fills %(fullname)s with the table's quoted name; nothing else goes into the string.
    return sa.DDL("TRUNCATE %(fullname)s").against(table)  # type: ignore[no-untyped-call]
