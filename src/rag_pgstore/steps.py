"""Run an operation's steps on a sync or an async connection, inside one transaction.

Each operation of the store is a generator (``lifecycle.py``, ``writes.py``, ``reads.py``)
that yields steps and receives their results. It never touches a connection, so the same
generator serves both the sync and the async API; only the small drivers below differ, by
``await``.

A plan whose first step is a :class:`~rag_pgstore.readstep.Read` is one query and nothing
else: ``readstep.py`` runs it outside a transaction, in one round trip.

Pooled connections are not pinged before use (a round trip per query). Instead, when the
first database step of a plan finds its connection dead (a server restart, a killed backend),
nothing has happened yet, so the pool is emptied and that step runs once more on a new
connection.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.errors import DeadlockDetected, UniqueViolation
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
from rag_pgstore.readstep import Hints, Read, async_read, sync_read

__all__ = [
    "Copy",
    "Execute",
    "Fetch",
    "Hints",
    "Plan",
    "Pull",
    "Read",
    "run",
    "run_async",
    "translate",
]

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
    """Stream rows into ``COPY ... FROM STDIN (FORMAT BINARY)``; reply with whether they landed.

    ``rows`` is called each time the step runs (a retry starts afresh), so the plan can encode
    rows while they stream. With ``savepoint``, a row whose id another transaction has just
    written (a unique violation, or a deadlock while waiting for that writer) rolls the COPY
    back to a savepoint and the reply is ``False``: the plan then writes those rows another
    way. Every other error propagates.
    """

    statement: sql.Composed
    types: Sequence[str]
    rows: Callable[[], Iterable[Sequence[Any]]]
    savepoint: bool = False


@dataclass(frozen=True)
class Pull:
    """Reply with the next item of ``source`` (awaited if it is async), ``None`` at its end.

    This is how a plan consumes a stream of input without knowing whether it is sync or async.
    """

    source: Iterator[Any] | AsyncIterator[Any]


Step = Fetch | Execute | Copy | Pull | Read
Plan = Generator[Step, Any, T]


def run(engine: Engine, plan: Plan[T], hints: Hints | None = None) -> T:
    """Drive ``plan`` to completion in one transaction on ``engine``.

    ``hints`` remembers, across calls, which form of a :class:`Read` suits each collection.
    """
    try:
        step = plan.send(None)
        for retry in (False, True):
            untouched = True  # no database step has run on this connection yet
            try:
                if isinstance(step, Read):
                    with engine.connect() as conn:
                        return _last(plan, sync_read(conn, step, {} if hints is None else hints))
                with engine.begin() as conn:
                    while True:
                        reply = _sync_step(conn, step)
                        untouched = untouched and isinstance(step, Pull)
                        try:
                            step = plan.send(reply)
                        except StopIteration as stop:
                            return stop.value  # type: ignore[no-any-return]
            except (sa_exc.DBAPIError, psycopg.Error) as exc:
                if retry or not untouched or not _lost(exc):
                    raise
                engine.dispose()  # the rest of the pool is as dead as this connection
        raise AssertionError("unreachable")
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        raise translate(exc) from exc
    finally:
        plan.close()


async def run_async(engine: AsyncEngine, plan: Plan[T], hints: Hints | None = None) -> T:
    """Drive ``plan`` to completion in one transaction on ``engine``, without blocking the loop."""
    try:
        step = plan.send(None)
        for retry in (False, True):
            untouched = True
            try:
                if isinstance(step, Read):
                    async with engine.connect() as conn:
                        reply = await async_read(conn, step, {} if hints is None else hints)
                        return _last(plan, reply)
                async with engine.begin() as conn:
                    while True:
                        reply = await _async_step(conn, step)
                        untouched = untouched and isinstance(step, Pull)
                        try:
                            step = plan.send(reply)
                        except StopIteration as stop:
                            return stop.value  # type: ignore[no-any-return]
            except (sa_exc.DBAPIError, psycopg.Error) as exc:
                if retry or not untouched or not _lost(exc):
                    raise
                await engine.dispose()
        raise AssertionError("unreachable")
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        raise translate(exc) from exc
    finally:
        plan.close()


def _last(plan: Plan[T], reply: Any) -> T:
    try:
        plan.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("a Read must be its plan's only step")


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection died (rather than the statement failing)."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated
    sqlstate = getattr(exc, "sqlstate", None)
    # No sqlstate: the socket died. 08: connection exceptions. 57P01-03: the server shut down
    # or restarted (not 57014, a cancelled statement, which must not be repeated).
    return sqlstate is None or sqlstate[:2] == "08" or sqlstate in _SERVER_GONE


_SERVER_GONE = ("57P01", "57P02", "57P03")


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
    if isinstance(step, Read):
        raise AssertionError("a Read must be its plan's only step")
    if not step.savepoint:
        _sync_copy(conn, step)
        return True
    try:
        with conn.begin_nested():
            _sync_copy(conn, step)
    except _CONTENDED:
        return False
    return True


# Another transaction wrote one of the ids first (or holds it while waiting for us).
_CONTENDED = (UniqueViolation, DeadlockDetected)


def _sync_copy(conn: Connection, step: Copy) -> None:
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor() as cursor, cursor.copy(step.statement) as copy:
            copy.set_types(list(step.types))
            for row in step.rows():
                copy.write_row(row)
    except psycopg.Error:
        if raw.broken:  # SQLAlchemy did not see this one: keep the dead connection out of the pool
            conn.invalidate()
        raise


async def _async_step(conn: AsyncConnection, step: Step) -> Any:
    if isinstance(step, Pull):
        if isinstance(step.source, AsyncIterator):
            return await anext(step.source, None)
        return next(step.source, None)
    if isinstance(step, Fetch):
        return (await conn.execute(step.statement)).all()
    if isinstance(step, Execute):
        return (await conn.execute(step.statement)).rowcount
    if isinstance(step, Read):
        raise AssertionError("a Read must be its plan's only step")
    if not step.savepoint:
        await _async_copy(conn, step)
        return True
    try:
        async with conn.begin_nested():
            await _async_copy(conn, step)
    except _CONTENDED:
        return False
    return True


async def _async_copy(conn: AsyncConnection, step: Copy) -> None:
    raw = (await conn.get_raw_connection()).driver_connection
    assert isinstance(raw, psycopg.AsyncConnection)
    try:
        async with raw.cursor() as cursor, cursor.copy(step.statement) as copy:
            copy.set_types(list(step.types))
            for row in step.rows():
                await copy.write_row(row)
    except psycopg.Error:
        if raw.broken:
            await conn.invalidate()
        raise


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
