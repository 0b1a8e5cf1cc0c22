"""The async driver: run a plan's steps on an ``AsyncEngine``, in one transaction.

This file is the one source of both drivers: ``driver/sync.py`` is generated from it by
``python scripts/gen_sync.py`` (``await`` dropped, ``Async*`` types replaced, and each
``if True:  # ASYNC`` block swapped for its ``else`` branch), and a test fails while the
generated file is stale. So a change to retries, errors or COPY is made once.

The only module that touches a connection. Decisions it shares with the sync driver (what an
error means, when to retry, which form of a read to send) are in ``policy.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.errors import DeadlockDetected, UniqueViolation
from psycopg.rows import dict_row
from sqlalchemy.sql.elements import ClauseElement

from rag_pgstore.driver import policy
from rag_pgstore.driver.steps import (
    Copy,
    Execute,
    Fetch,
    Forget,
    Plan,
    PlanSource,
    Pull,
    Read,
    Step,
)
from rag_pgstore.errors import UnsupportedError
from rag_pgstore.sql.catalog import ann_indexed, set_session

if True:  # ASYNC
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
else:
    import time

    from sqlalchemy.engine import Connection, Engine  # noqa: F401  (the sync driver's)

__all__ = ["run"]

T = TypeVar("T")

# Another transaction wrote one of the ids first (or holds it while waiting for us).
_CONTENDED = (UniqueViolation, DeadlockDetected)


async def run(engine: AsyncEngine, source: PlanSource[T]) -> T:
    """Drive a plan to completion in one transaction on ``engine``.

    ``source`` is a plan, or a function that builds one: then a transaction lost to a
    deadlock or a serialization failure runs again, up to ``policy.ATTEMPTS`` times, from a
    fresh plan.
    """
    plan, again = policy.start(source)
    for attempt in itertools.count(1):
        try:
            return await _run_once(engine, plan)
        except policy.DRIVER_ERRORS as exc:
            if not policy.retry(exc, attempt, again):
                raise policy.translate(exc) from exc
        if True:  # ASYNC
            await asyncio.sleep(policy.pause(attempt))
        else:
            time.sleep(policy.pause(attempt))
        assert again is not None
        plan = again()
    raise AssertionError("unreachable")


async def _run_once(engine: AsyncEngine, plan: Plan[T]) -> T:
    database = policy.database(engine)  # whose ANN-index answers a Read may use
    forgotten: list[Forget] = []  # applied once the transaction has committed
    try:
        step = plan.send(None)
        for retry in (False, True):
            untouched = True  # no database step has run on this connection yet
            try:
                if isinstance(step, Read):
                    async with engine.connect() as conn:
                        return policy.last(plan, await _read(conn, database, step))
                async with engine.begin() as conn:
                    while True:
                        if isinstance(step, Forget):
                            forgotten.append(step)
                            reply = None
                        elif isinstance(step, Read):  # after another step: in the transaction
                            reply = await _read(conn, database, step, autocommit=False)
                        else:
                            reply = await _step(conn, step)
                        untouched = untouched and isinstance(step, Pull)
                        try:
                            step = plan.send(reply)
                        except StopIteration as stop:
                            result: T = stop.value
                            break
                for done in forgotten:
                    policy.forget(database, done)
                return result
            except policy.DRIVER_ERRORS as exc:
                if retry or not untouched or not policy.lost(exc):
                    raise
                await engine.dispose()  # the rest of the pool is as dead as this connection
        raise AssertionError("unreachable")
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        plan.close()


async def _step(conn: AsyncConnection, step: Step) -> Any:
    if isinstance(step, Pull):
        if True:  # ASYNC
            if isinstance(step.source, AsyncIterator):
                return await anext(step.source, None)
        elif not isinstance(step.source, Iterator):
            raise UnsupportedError(
                "expected a sync iterable here; async iterables need the a* methods"
            )
        return next(step.source, None)
    if isinstance(step, Fetch):
        if step.unprepared:
            return await _unprepared(conn, step)
        result = await conn.execute(step.statement, step.params)
        return result.all()
    if isinstance(step, Execute):
        result = await conn.execute(step.statement)
        return result.rowcount
    if isinstance(step, (Read, Forget)):
        raise AssertionError("handled by _run_once")
    if not step.savepoint:
        await _copy(conn, step)
        return True
    try:
        async with conn.begin_nested():
            await _copy(conn, step)
    except _CONTENDED:
        return False
    return True


async def _driver(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """The transaction's psycopg connection, for what SQLAlchemy has no word for (COPY, an
    unprepared statement)."""
    if True:  # ASYNC
        raw = (await conn.get_raw_connection()).driver_connection
    else:
        raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.AsyncConnection)
    return raw


async def _drop_if_broken(conn: AsyncConnection, raw: psycopg.AsyncConnection[Any]) -> None:
    if raw.broken:  # SQLAlchemy did not see this one: keep the dead connection out of the pool
        await conn.invalidate()


async def _copy(conn: AsyncConnection, step: Copy) -> None:
    raw = await _driver(conn)
    try:
        async with raw.cursor() as cursor, cursor.copy(step.statement) as copy:
            copy.set_types(list(step.types))
            for row in step.rows():
                await copy.write_row(row)
    except psycopg.Error:
        await _drop_if_broken(conn, raw)
        raise


async def _unprepared(conn: AsyncConnection, step: Fetch) -> list[tuple[Any, ...]]:
    """Run a Fetch on the transaction's driver connection, never as a prepared statement."""
    assert isinstance(step.statement, ClauseElement)
    compiled = step.statement.compile(
        dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
    )
    params = {**compiled.params, **(step.params or {})}
    raw = await _driver(conn)
    try:
        async with raw.cursor() as cursor:
            await cursor.execute(compiled.string, params, prepare=False)
            return await cursor.fetchall()
    except psycopg.Error:
        await _drop_if_broken(conn, raw)
        raise


async def _read(
    conn: AsyncConnection, database: str, step: Read, *, autocommit: bool = True
) -> list[dict[str, Any]]:
    """Run a Read straight on the driver connection: autocommit, no SQLAlchemy result layer.

    That is the plain similarity search, where BEGIN/COMMIT and result processing would
    otherwise be most of the latency. A Read a plan yields after other steps runs in their
    transaction (``autocommit=False``).
    """
    if True:  # ASYNC
        pooled = await conn.get_raw_connection()
    else:
        pooled = conn.connection
    raw = pooled.driver_connection
    assert isinstance(raw, psycopg.AsyncConnection)
    if autocommit:
        if True:  # ASYNC
            await raw.set_autocommit(True)  # one statement: no BEGIN/COMMIT round trips
        else:
            raw.autocommit = True  # one statement: no BEGIN/COMMIT round trips
    known = pooled.info.setdefault(policy.SESSION_KEY, {})
    try:
        async with raw.cursor(row_factory=dict_row) as cursor:
            if settings := policy.unset(step, known):
                await cursor.execute(*set_session(settings))
                known.update(settings)
            if (indexed := policy.stale(database, step)) is not None:
                await cursor.execute(*ann_indexed(indexed.schema, indexed.table))
                row = await cursor.fetchone()
                policy.remember(database, indexed, bool(row and row["indexed"]))
            await cursor.execute(policy.form(database, step), step.params)
            return await cursor.fetchall()
    except psycopg.Error:
        await _drop_if_broken(conn, raw)
        raise
    finally:
        if autocommit and not raw.broken:
            if True:  # ASYNC
                await raw.set_autocommit(False)
            else:
                raw.autocommit = False
