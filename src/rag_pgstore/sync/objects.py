"""The SQL objects a table sync is made of, their migrations, and the statements over them.

All plain PostgreSQL, in the collection's schema: a registry of syncs, one queue table
shared by every sync of the schema, one trigger function shared by every trigger, and one
row trigger per synced table. Names reach the SQL through SQLAlchemy's quoting (``DDL`` with
``%(fullname)s``, quoted literals for trigger arguments), never pasted in.

The shared objects have a version of their own, in the registry table's comment
(``rag_pgstore sync objects, version N``; none: version 1, from before it was recorded),
and :data:`MIGRATIONS` bring older ones up to it, the way a collection's table is migrated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.sql.base import Executable

from rag_pgstore.driver.steps import Execute, Fetch, Plan
from rag_pgstore.errors import SchemaError
from rag_pgstore.schema import ddl, sql_literal

__all__ = [
    "MIGRATIONS",
    "QUEUE_NAME",
    "SYNCS_NAME",
    "VERSION",
    "claim",
    "create_trigger",
    "drop_trigger",
    "migrate",
    "queue_table",
    "syncs_table",
    "trigger_function",
    "version_of",
]

SYNCS_NAME = "rag_pgstore_syncs"
QUEUE_NAME = "rag_pgstore_sync_queue"
FUNCTION_NAME = "rag_pgstore_sync_enqueue"
TRIGGER_PREFIX = "rag_pgstore_sync_"


def syncs_table(schema: str) -> sa.Table:
    """One row per sync: what it reads, where it writes, and how far its backfill got."""
    return sa.Table(
        SYNCS_NAME,
        sa.MetaData(),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("collection", sa.Text, nullable=False, unique=True),
        sa.Column("source_schema", sa.Text, nullable=False),
        sa.Column("source_table", sa.Text, nullable=False),
        sa.Column("id_column", sa.Text, nullable=False),
        sa.Column("id_type", sa.Text, nullable=False),
        sa.Column("text_columns", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("metadata_columns", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("max_tokens", sa.Integer, nullable=False),
        sa.Column("backfill_after", sa.Text),
        sa.Column("backfill_done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("backfill_owner", sa.Text),  # the worker backfilling, until backfill_until
        sa.Column("backfill_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=schema,
    )


def queue_table(schema: str) -> sa.Table:
    """Changed source ids, one row per change; a worker leases rows, then deletes them."""
    table = sa.Table(
        QUEUE_NAME,
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("sync", sa.Text, nullable=False),
        sa.Column("source_id", sa.Text, nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("due_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("leased_until", sa.DateTime(timezone=True)),
        sa.Column("lease_token", sa.Text),  # the claim holding the lease
        sa.Column("last_error", sa.Text),
        sa.Column("parked", sa.Boolean, nullable=False, server_default=sa.false()),
        schema=schema,
    )
    sa.Index(f"{QUEUE_NAME}_due", table.c.sync, table.c.due_at, postgresql_where=~table.c.parked)
    sa.Index(f"{QUEUE_NAME}_source", table.c.sync, table.c.source_id)
    # A claim's own rows: renewing its lease, releasing it, clearing what it applied.
    sa.Index(
        f"{QUEUE_NAME}_lease",
        table.c.lease_token,
        postgresql_where=table.c.lease_token.is_not(None),
    )
    return table


# Fixed text; %(fullname)s is the queue table, quoted by SQLAlchemy. One function serves
# every trigger: its arguments are the sync's name, the id column and the watched columns.
# An UPDATE that changes none of the watched columns (a stock count) enqueues nothing; one
# that changes the id enqueues the old id (its chunks go) and the new one.
_FUNCTION = """
CREATE OR REPLACE FUNCTION %(schema)s.rag_pgstore_sync_enqueue() RETURNS trigger
LANGUAGE plpgsql AS $body$
DECLARE
    id_column text := TG_ARGV[1];
    watched text[] := TG_ARGV[2]::text[];
    new_row jsonb;
    old_row jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD); END IF;
    IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW); END IF;
    IF TG_OP = 'UPDATE' AND new_row -> id_column = old_row -> id_column AND NOT EXISTS (
        SELECT 1 FROM unnest(watched) AS w(c) WHERE new_row -> w.c IS DISTINCT FROM old_row -> w.c
    ) THEN
        RETURN NULL;
    END IF;
    IF old_row IS NOT NULL
        AND (new_row IS NULL OR new_row -> id_column IS DISTINCT FROM old_row -> id_column)
    THEN
        INSERT INTO %(fullname)s (sync, source_id) VALUES (TG_ARGV[0], old_row ->> id_column);
    END IF;
    IF new_row IS NOT NULL THEN
        INSERT INTO %(fullname)s (sync, source_id) VALUES (TG_ARGV[0], new_row ->> id_column);
    END IF;
    RETURN NULL;
END
$body$
"""


def trigger_function(schema: str) -> Executable:
    return ddl(_FUNCTION, queue_table(schema))


def _source(schema: str, table: str) -> sa.Table:
    return sa.Table(table, sa.MetaData(), schema=schema)


def create_trigger(
    schema: str, name: str, source: tuple[str, str], id_column: str, watched: Sequence[str]
) -> Executable:
    """The row trigger on the source table; ``name`` is a checked identifier."""
    preparer = pg.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    trigger = preparer.quote(TRIGGER_PREFIX + name)
    function = f"{preparer.quote_schema(schema)}.{FUNCTION_NAME}"
    columns = "{" + ",".join(f'"{c}"' for c in watched) + "}"  # a text[] literal of names
    arguments = ", ".join(sql_literal(a) for a in (name, id_column, columns))
    return ddl(
        f"CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON %(fullname)s "
        f"FOR EACH ROW EXECUTE FUNCTION {function}({arguments})",
        _source(*source),
    )


def drop_trigger(name: str, source_schema: str, source_table: str) -> Executable:
    preparer = pg.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    trigger = preparer.quote(TRIGGER_PREFIX + name)
    return ddl(
        f"DROP TRIGGER IF EXISTS {trigger} ON %(fullname)s", _source(source_schema, source_table)
    )


# -- migrations --------------------------------------------------------------------------------

_VERSION_NOTE = "rag_pgstore sync objects, version "


def _v1_create(schema: str) -> list[Executable]:
    """The registry, the queue with its indexes and the trigger function, in their latest
    shape (later migrations bring older ones up to it)."""
    syncs, queue = syncs_table(schema), queue_table(schema)
    return [
        sa.schema.CreateTable(syncs, if_not_exists=True),
        sa.schema.CreateTable(queue, if_not_exists=True),
        *(sa.schema.CreateIndex(index, if_not_exists=True) for index in queue.indexes),
        trigger_function(schema),
    ]


def _v2_lease_index(schema: str) -> list[Executable]:
    """The index on lease tokens: lease renewal looks a claim's rows up by token."""
    queue = queue_table(schema)
    lease = next(i for i in queue.indexes if i.name == f"{QUEUE_NAME}_lease")
    return [sa.schema.CreateIndex(lease, if_not_exists=True)]


# Migration N (1-based) brings the objects from version N-1 to N. Append, never edit.
MIGRATIONS: tuple[Callable[[str], list[Executable]], ...] = (_v1_create, _v2_lease_index)
VERSION = len(MIGRATIONS)


def version_of(schema: str) -> Plan[int]:
    """The version of the schema's sync objects: 0 when there are none."""
    syncs = syncs_table(schema)
    found = yield Fetch(sa.select(sa.func.to_regclass(f"{schema}.{SYNCS_NAME}")))
    if found[0][0] is None:
        return 0
    comment = yield Fetch(
        sa.select(
            sa.func.obj_description(sa.func.to_regclass(f"{schema}.{syncs.name}"), "pg_class")
        )
    )
    note = comment[0][0] or ""
    if not note.startswith(_VERSION_NOTE):
        return 1  # made before the version was recorded
    return int(note.removeprefix(_VERSION_NOTE))


def migrate(schema: str) -> Plan[int]:
    """Create the schema's sync objects, or bring them up to :data:`VERSION`; the version
    found. Under a lock of the schema's, so two ``sync add`` at once migrate once."""
    turn = sa.func.hashtext(sa.literal(f"rag_pgstore_sync_objects:{schema}", sa.Text))
    yield Fetch(sa.select(sa.func.pg_advisory_xact_lock(turn)))
    found = yield from version_of(schema)
    if found > VERSION:
        raise newer(schema, found)
    for migration in MIGRATIONS[found:]:
        for statement in migration(schema):
            yield Execute(statement)
    if found < VERSION:
        note = sql_literal(f"{_VERSION_NOTE}{VERSION}")
        yield Execute(ddl(f"COMMENT ON TABLE %(fullname)s IS {note}", syncs_table(schema)))
    return found


def newer(schema: str, found: int) -> SchemaError:
    return SchemaError(
        f"expected the sync objects of schema {schema!r} at version <= {VERSION}, got "
        f"{found}: a newer rag_pgstore made them; upgrade this one"
    )


def claim(queue: sa.Table, sync: str, limit: int) -> sa.Select[Any]:
    """Due rows of ``sync`` no worker holds, oldest first, locked for this transaction and
    skipping rows another claim has locked (``FOR UPDATE SKIP LOCKED``); rows whose source
    id is leased by a worker now are left for later, so one source row is never worked on
    twice at once."""
    held = (
        sa.select(queue.c.source_id)
        .where(queue.c.sync == sync, queue.c.leased_until >= sa.func.now())
        .scalar_subquery()
    )
    return (
        sa.select(queue.c.id, queue.c.source_id, queue.c.attempts)
        .where(
            queue.c.sync == sync,
            ~queue.c.parked,
            queue.c.due_at <= sa.func.now(),
            sa.or_(queue.c.leased_until.is_(None), queue.c.leased_until < sa.func.now()),
            queue.c.source_id.not_in(held),
        )
        .order_by(queue.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def lease_for(seconds: float) -> sa.ColumnElement[Any]:
    return sa.func.now() + sa.literal(timedelta(seconds=seconds), sa.Interval)
