"""Run an operation's steps on a sync or an async connection, inside one transaction.

Each operation of the store is a generator (``lifecycle.py``, ``writes.py``, ``reads.py``)
that yields steps and receives their results. It never touches a connection, so the same
generator serves both the sync and the async API; only the two small drivers below differ, by
``await``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.base import Executable

from rag_pgstore.errors import (
    DatabaseError,
    DatabaseUnavailableError,
    RagPgStoreError,
    SchemaError,
    UnsupportedError,
)

__all__ = ["Copy", "Execute", "Fetch", "Plan", "Pull", "run", "run_async"]

T = TypeVar("T")


@dataclass(frozen=True)
class Fetch:
    """Execute a statement and reply with all its rows."""

    statement: Executable


@dataclass(frozen=True)
class Execute:
    """Execute a statement and reply with its row count."""

    statement: Executable


@dataclass(frozen=True)
class Copy:
    """Stream rows into ``COPY ... FROM STDIN (FORMAT BINARY)``; reply with ``None``."""

    statement: sql.Composed
    types: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Pull:
    """Reply with the next item of ``source`` (awaited if it is async), ``None`` at its end.

    This is how a plan consumes a stream of input without knowing whether it is sync or async.
    """

    source: Iterator[Any] | AsyncIterator[Any]


Step = Fetch | Execute | Copy | Pull
Plan = Generator[Step, Any, T]


def run(engine: Engine, plan: Plan[T]) -> T:
    """Drive ``plan`` to completion in one transaction on ``engine``."""
    try:
        with engine.begin() as conn:
            reply: Any = None
            while True:
                try:
                    step = plan.send(reply)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                reply = _sync_step(conn, step)
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        raise translate(exc) from exc
    finally:
        plan.close()


async def run_async(engine: AsyncEngine, plan: Plan[T]) -> T:
    """Drive ``plan`` to completion in one transaction on ``engine``, without blocking the loop."""
    try:
        async with engine.begin() as conn:
            reply: Any = None
            while True:
                try:
                    step = plan.send(reply)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                reply = await _async_step(conn, step)
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        raise translate(exc) from exc
    finally:
        plan.close()


def _sync_step(conn: Connection, step: Step) -> Any:
    if isinstance(step, Pull):
        if not isinstance(step.source, Iterator):
            raise UnsupportedError(
                "expected a sync iterable here; async iterables need the a* methods"
            )
        return next(step.source, None)
    if isinstance(step, Fetch):
        return conn.execute(step.statement).all()
    if isinstance(step, Execute):
        return conn.execute(step.statement).rowcount
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    with raw.cursor() as cursor, cursor.copy(step.statement) as copy:
        copy.set_types(list(step.types))
        for row in step.rows:
            copy.write_row(row)
    return None


async def _async_step(conn: AsyncConnection, step: Step) -> Any:
    if isinstance(step, Pull):
        if isinstance(step.source, AsyncIterator):
            return await anext(step.source, None)
        return next(step.source, None)
    if isinstance(step, Fetch):
        return (await conn.execute(step.statement)).all()
    if isinstance(step, Execute):
        return (await conn.execute(step.statement)).rowcount
    raw = (await conn.get_raw_connection()).driver_connection
    assert isinstance(raw, psycopg.AsyncConnection)
    async with raw.cursor() as cursor, cursor.copy(step.statement) as copy:
        copy.set_types(list(step.types))
        for row in step.rows:
            await copy.write_row(row)
    return None


_UNAVAILABLE_CLASSES = ("08", "57")  # connection exceptions; operator intervention (shutdown)


def translate(exc: BaseException) -> RagPgStoreError:
    """Map a driver or SQLAlchemy error to ours, keeping its message but never its parameters."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    message = str(orig).strip() or type(orig).__name__
    if sqlstate == "42P01":
        return SchemaError(f"{message}; create the collection first with store.setup()")
    lost = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    if (
        lost
        or (
            isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError))
            and sqlstate is None
        )
        or (sqlstate or "")[:2] in _UNAVAILABLE_CLASSES
    ):
        return DatabaseUnavailableError(f"database unavailable: {message}", sqlstate=sqlstate)
    return DatabaseError(message, sqlstate=sqlstate)
