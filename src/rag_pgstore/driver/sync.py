"""The sync driver: run a plan's steps on an ``Engine``, in one transaction.

Generated from ``aio.py`` by ``python scripts/gen_sync.py``: edit that file, not this one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.errors import DeadlockDetected, UniqueViolation
from psycopg.rows import dict_row
from sqlalchemy.engine import Connection, Engine
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

__all__ = ["run"]

T = TypeVar("T")

# Another transaction wrote one of the ids first (or holds it while waiting for us).
_CONTENDED = (UniqueViolation, DeadlockDetected)


def run(engine: Engine, source: PlanSource[T]) -> T:
    """Drive a plan to completion in one transaction on ``engine``.

    ``source`` is a plan, or a function that builds one: then a transaction lost to a
    deadlock or a serialization failure runs again, up to ``policy.ATTEMPTS`` times, from a
    fresh plan.
    """
    plan, again = policy.start(source)
    for attempt in itertools.count(1):
        try:
            return _run_once(engine, plan)
        except policy.DRIVER_ERRORS as exc:
            if not policy.retry(exc, attempt, again):
                raise policy.translate(exc) from exc
        time.sleep(policy.pause(attempt))
        assert again is not None
        plan = again()
    raise AssertionError("unreachable")


def _run_once(engine: Engine, plan: Plan[T]) -> T:
    database = policy.database(engine)  # whose ANN-index answers a Read may use
    forgotten: list[Forget] = []  # applied once the transaction has committed
    try:
        step = plan.send(None)
        for retry in (False, True):
            untouched = True  # no database step has run on this connection yet
            try:
                if isinstance(step, Read):
                    with engine.connect() as conn:
                        return policy.last(plan, _read(conn, database, step))
                with engine.begin() as conn:
                    while True:
                        if isinstance(step, Forget):
                            forgotten.append(step)
                            reply = None
                        elif isinstance(step, Read):  # after another step: in the transaction
                            reply = _read(conn, database, step, autocommit=False)
                        else:
                            reply = _step(conn, step)
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
                engine.dispose()  # the rest of the pool is as dead as this connection
        raise AssertionError("unreachable")
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        plan.close()


def _step(conn: Connection, step: Step) -> Any:
    if isinstance(step, Pull):
        if not isinstance(step.source, Iterator):
            raise UnsupportedError(
                "expected a sync iterable here; async iterables need the a* methods"
            )
        return next(step.source, None)
    if isinstance(step, Fetch):
        if step.unprepared:
            return _unprepared(conn, step)
        result = conn.execute(step.statement, step.params)
        return result.all()
    if isinstance(step, Execute):
        result = conn.execute(step.statement)
        return result.rowcount
    if isinstance(step, (Read, Forget)):
        raise AssertionError("handled by _run_once")
    if not step.savepoint:
        _copy(conn, step)
        return True
    try:
        with conn.begin_nested():
            _copy(conn, step)
    except _CONTENDED:
        return False
    return True


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    """The transaction's psycopg connection, for what SQLAlchemy has no word for (COPY, an
    unprepared statement)."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


def _drop_if_broken(conn: Connection, raw: psycopg.Connection[Any]) -> None:
    if raw.broken:  # SQLAlchemy did not see this one: keep the dead connection out of the pool
        conn.invalidate()


def _copy(conn: Connection, step: Copy) -> None:
    raw = _driver(conn)
    try:
        with raw.cursor() as cursor, cursor.copy(step.statement) as copy:
            copy.set_types(list(step.types))
            for row in step.rows():
                copy.write_row(row)
    except psycopg.Error:
        _drop_if_broken(conn, raw)
        raise


def _unprepared(conn: Connection, step: Fetch) -> list[tuple[Any, ...]]:
    """Run a Fetch on the transaction's driver connection, never as a prepared statement."""
    assert isinstance(step.statement, ClauseElement)
    compiled = step.statement.compile(
        dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
    )
    params = {**compiled.params, **(step.params or {})}
    raw = _driver(conn)
    try:
        with raw.cursor() as cursor:
            cursor.execute(compiled.string, params, prepare=False)
            return cursor.fetchall()
    except psycopg.Error:
        _drop_if_broken(conn, raw)
        raise


def _read(
    conn: Connection, database: str, step: Read, *, autocommit: bool = True
) -> list[dict[str, Any]]:
    """Run a Read straight on the driver connection: autocommit, no SQLAlchemy result layer.

    That is the plain similarity search, where BEGIN/COMMIT and result processing would
    otherwise be most of the latency. A Read a plan yields after other steps runs in their
    transaction (``autocommit=False``).
    """
    pooled = conn.connection
    raw = pooled.driver_connection
    assert isinstance(raw, psycopg.Connection)
    if autocommit:
        raw.autocommit = True  # one statement: no BEGIN/COMMIT round trips
    known = pooled.info.setdefault(policy.SESSION_KEY, {})
    try:
        with raw.cursor(row_factory=dict_row) as cursor:
            if settings := policy.unset(step, known):
                cursor.execute(*set_session(settings))
                known.update(settings)
            if (indexed := policy.stale(database, step)) is not None:
                cursor.execute(*ann_indexed(indexed.schema, indexed.table))
                row = cursor.fetchone()
                policy.remember(database, indexed, bool(row and row["indexed"]))
            cursor.execute(policy.form(database, step), step.params)
            return cursor.fetchall()
    except psycopg.Error:
        _drop_if_broken(conn, raw)
        raise
    finally:
        if autocommit and not raw.broken:
            raw.autocommit = False
