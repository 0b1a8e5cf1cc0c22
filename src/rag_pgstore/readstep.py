"""A plan's one-statement read: run outside a transaction, in one round trip.

A plan whose first step is a :class:`Read` is one query and nothing else (``steps.run``
hands it here). It runs straight on the driver connection: no BEGIN, no COMMIT, no SQLAlchemy
result processing. That is the plain similarity search, where those costs would otherwise be
most of the latency.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["HINT_SECONDS", "Hints", "IndexedVariant", "Read", "Session", "async_read", "sync_read"]


@dataclass(frozen=True)
class IndexedVariant:
    """Another form of a :class:`Read`'s query, faster when the collection has an ANN index.

    ``probe`` (with ``probe_params``) answers one row, ``indexed``. The driver asks it at most
    once per ``HINT_SECONDS`` per ``key``, on the same connection, and remembers the answer in
    the ``hints`` its caller keeps; both forms return the same rows, so a stale answer costs
    time, never correctness.
    """

    sql: str
    key: str
    probe: str
    probe_params: Mapping[str, Any]


@dataclass(frozen=True)
class Session:
    """Session settings a :class:`Read` needs; set once per connection, not per query.

    ``sql`` (with ``params``) sets them; the driver remembers on the pooled connection which
    values it already has, so a Read stays one round trip.
    """

    settings: tuple[tuple[str, str], ...]
    sql: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Read:
    """A plan's only step: run compiled ``sql`` with ``params`` outside a transaction.

    Replies with the rows as dicts. ``sql`` comes from a SQLAlchemy statement compiled for the
    psycopg dialect (``statements.nearest_read``), never from strings.
    """

    sql: str
    params: Mapping[str, Any]
    indexed: IndexedVariant | None = None
    session: Session | None = None


HINT_SECONDS = 60.0
Hints = dict[str, tuple[float, bool]]


def _stale(step: Read, hints: Hints) -> IndexedVariant | None:
    """The variant whose probe must run now, if any."""
    variant = step.indexed
    if variant is None:
        return None
    seen = hints.get(variant.key)
    return variant if seen is None or time.monotonic() - seen[0] > HINT_SECONDS else None


_SESSION_KEY = "rag_pgstore.session"  # in the pooled connection's info: settings it has


def _unset(step: Read, known: dict[str, str]) -> Session | None:
    """The step's session settings, unless the connection has them all already."""
    session = step.session
    if session is None or all(known.get(k) == v for k, v in session.settings):
        return None
    return session


def _form(step: Read, hints: Hints) -> str:
    variant = step.indexed
    return variant.sql if variant is not None and hints[variant.key][1] else step.sql


def sync_read(conn: Connection, step: Read, hints: Hints) -> list[dict[str, Any]]:
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    raw.autocommit = True  # one statement: no BEGIN/COMMIT round trips
    known = conn.connection.info.setdefault(_SESSION_KEY, {})
    try:
        with raw.cursor(row_factory=dict_row) as cursor:
            if (session := _unset(step, known)) is not None:
                cursor.execute(session.sql, session.params)
                known.update(session.settings)
            if (variant := _stale(step, hints)) is not None:
                row = cursor.execute(variant.probe, variant.probe_params).fetchone()
                hints[variant.key] = (time.monotonic(), bool(row and row["indexed"]))
            cursor.execute(_form(step, hints), step.params)
            return cursor.fetchall()
    except psycopg.Error:
        if raw.broken:
            conn.invalidate()
        raise
    finally:
        if not raw.broken:
            raw.autocommit = False


async def async_read(conn: AsyncConnection, step: Read, hints: Hints) -> list[dict[str, Any]]:
    pooled = await conn.get_raw_connection()
    raw = pooled.driver_connection
    assert isinstance(raw, psycopg.AsyncConnection)
    await raw.set_autocommit(True)
    known = pooled.info.setdefault(_SESSION_KEY, {})
    try:
        async with raw.cursor(row_factory=dict_row) as cursor:
            if (session := _unset(step, known)) is not None:
                await cursor.execute(session.sql, session.params)
                known.update(session.settings)
            if (variant := _stale(step, hints)) is not None:
                await cursor.execute(variant.probe, variant.probe_params)
                row = await cursor.fetchone()
                hints[variant.key] = (time.monotonic(), bool(row and row["indexed"]))
            await cursor.execute(_form(step, hints), step.params)
            return await cursor.fetchall()
    except psycopg.Error:
        if raw.broken:
            await conn.invalidate()
        raise
    finally:
        if not raw.broken:
            await raw.set_autocommit(False)
