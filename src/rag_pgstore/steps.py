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

import asyncio
import itertools
import random
import time
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
    QueryTimeoutError,
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
    "PlanSource",
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


PlanSource = Plan[T] | Callable[[], Plan[T]]

# A transaction PostgreSQL aborted to break a deadlock (40P01) or a serialization conflict
# (40001) left nothing behind; a plan built afresh can simply run again once the other
# transaction is through. Bounded, with a growing random pause so two victims do not collide
# again in step.
CONFLICTS = ("40P01", "40001")
ATTEMPTS = 5


def _pause(attempt: int) -> float:
    return float(random.uniform(0.01, 0.05) * 2**attempt)


def _start(source: PlanSource[T]) -> tuple[Plan[T], Callable[[], Plan[T]] | None]:
    if callable(source):
        return source(), source
    return source, None


def _conflict(exc: BaseException, attempt: int, again: object) -> bool:
    """Whether a failed attempt should be run again from a fresh plan."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    return again is not None and attempt < ATTEMPTS and getattr(orig, "sqlstate", None) in CONFLICTS


def run(engine: Engine, source: PlanSource[T], hints: Hints | None = None) -> T:
    """Drive a plan to completion in one transaction on ``engine``.

    ``source`` is a plan, or a function that builds one: then a transaction lost to a
    deadlock or a serialization failure is run again, up to ``ATTEMPTS`` times, from a new
    plan. ``hints`` remembers, across calls, which form of a :class:`Read` suits each
    collection.
    """
    plan, again = _start(source)
    for attempt in itertools.count(1):
        try:
            return _run_once(engine, plan, hints)
        except (sa_exc.DBAPIError, psycopg.Error) as exc:
            if not _conflict(exc, attempt, again):
                raise translate(exc) from exc
        time.sleep(_pause(attempt))
        assert again is not None
        plan = again()
    raise AssertionError("unreachable")


async def run_async(engine: AsyncEngine, source: PlanSource[T], hints: Hints | None = None) -> T:
    """Async :func:`run`: drive a plan to completion without blocking the loop."""
    plan, again = _start(source)
    for attempt in itertools.count(1):
        try:
            return await _run_once_async(engine, plan, hints)
        except (sa_exc.DBAPIError, psycopg.Error) as exc:
            if not _conflict(exc, attempt, again):
                raise translate(exc) from exc
        await asyncio.sleep(_pause(attempt))
        assert again is not None
        plan = again()
    raise AssertionError("unreachable")


def _run_once(engine: Engine, plan: Plan[T], hints: Hints | None) -> T:
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
    finally:
        plan.close()


async def _run_once_async(engine: AsyncEngine, plan: Plan[T], hints: Hints | None) -> T:
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
_CANCELED = "57014"  # statement_timeout, or a cancel request: the server itself is fine


def translate(exc: BaseException) -> RagPgStoreError:
    """Map a driver or SQLAlchemy error to ours: one line, never the SQL or its parameters.

    The message is the server's primary message (or the first line of the driver's) with the
    SQLSTATE; ``detail`` and ``hint`` keep the rest, and the driver's error is ``__cause__``.
    """
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(orig).strip()
    first = primary.splitlines()[0].strip() if primary.strip() else type(orig).__name__
    extra = {
        "sqlstate": sqlstate,
        "detail": getattr(diag, "message_detail", None),
        "hint": getattr(diag, "message_hint", None),
    }
    code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    if sqlstate == "42P01":
        return SchemaError(f"{first}; create the collection first with store.setup()")
    if sqlstate == _CANCELED:
        return QueryTimeoutError(
            f"query cancelled: {first}{code}; nothing was changed. Raise statement_timeout, "
            "narrow the query, or add an ANN index",
            **extra,
        )
    lost = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    if (
        lost
        or (
            isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError))
            and sqlstate is None
        )
        or (sqlstate or "")[:2] in _UNAVAILABLE_CLASSES
    ):
        return DatabaseUnavailableError(f"database unavailable: {first}{code}", **extra)
    return DatabaseError(f"{first}{code}", **extra)
