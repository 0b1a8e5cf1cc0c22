"""The decisions both drivers share, written once: what an error means, when a transaction runs
again, and which form of a one-round-trip read to send.

Nothing here does I/O; ``aio.py`` and the generated ``sync.py`` call it around theirs.
"""

from __future__ import annotations

import random
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from sqlalchemy import exc as sa_exc

from rag_pgstore.driver.steps import Forget, IndexedForm, Plan, PlanSource, Read
from rag_pgstore.errors import (
    CollectionNotFoundError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidInputError,
    QueryTimeoutError,
    RagPgStoreError,
    SchemaError,
)

__all__ = [
    "ATTEMPTS",
    "DRIVER_ERRORS",
    "HINT_SECONDS",
    "SESSION_KEY",
    "database",
    "forget",
    "form",
    "hint",
    "last",
    "lost",
    "pause",
    "remember",
    "retry",
    "stale",
    "start",
    "translate",
    "unset",
]

T = TypeVar("T")
# sa_exc.TimeoutError: no pooled connection came free in time (not a DBAPIError).
DRIVER_ERRORS = (sa_exc.DBAPIError, psycopg.Error, sa_exc.TimeoutError)

# -- plans -----------------------------------------------------------------------------------


def start(source: PlanSource[T]) -> tuple[Plan[T], Callable[[], Plan[T]] | None]:
    """The first plan to run, and how to build another for a retry (``None``: it cannot be)."""
    if callable(source):
        return source(), source
    return source, None


def last(plan: Plan[T], reply: Any) -> T:
    """Hand a Read's rows to its plan and return the plan's result."""
    try:
        plan.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("a Read must be its plan's only step")


# -- retries ---------------------------------------------------------------------------------

# A transaction PostgreSQL aborted to break a deadlock (40P01) or a serialization conflict
# (40001) left nothing behind; a plan built afresh can simply run again once the other
# transaction is through. Bounded, with a growing random pause so that two victims do not
# collide again in step.
CONFLICTS = ("40P01", "40001")
ATTEMPTS = 5


def retry(exc: BaseException, attempt: int, again: object) -> bool:
    """Whether a transaction that failed with ``exc`` should run again from a fresh plan."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    return again is not None and attempt < ATTEMPTS and getattr(orig, "sqlstate", None) in CONFLICTS


def pause(attempt: int) -> float:
    return float(random.uniform(0.01, 0.05) * 2**attempt)


def lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection died (rather than the statement failing).

    Pooled connections are not pinged before use (a round trip per query). Instead, when the
    first database step of a plan finds its connection dead (a server restart, a killed
    backend), nothing has happened yet, so the pool is emptied and the step runs again.
    """
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated
    if isinstance(exc, sa_exc.TimeoutError):
        return False  # the pool is busy, not dead: emptying it would only add to the wait
    sqlstate = getattr(exc, "sqlstate", None)
    # No sqlstate: the socket died. 08: connection exceptions. 57P01-03: the server shut down
    # or restarted (not 57014, a cancelled statement, which must not be repeated).
    return sqlstate is None or sqlstate[:2] == "08" or sqlstate in _SERVER_GONE


_SERVER_GONE = ("57P01", "57P02", "57P03")

# -- errors ----------------------------------------------------------------------------------

_UNAVAILABLE_CLASSES = ("08", "57")  # connection exceptions; operator intervention (shutdown)
_CANCELED = "57014"  # statement_timeout, or a cancel request: the server itself is fine


_TOO_LONG = "54000"  # program_limit_exceeded
_TOO_COMPLEX = "54001"  # statement_too_complex: stack depth limit exceeded
_UNDEFINED_COLUMN = "42703"


def translate(exc: BaseException) -> RagPgStoreError:
    """Map a driver or SQLAlchemy error to ours: one line, never the SQL or its parameters.

    The message is the server's primary message (or the first line of the driver's) with the
    SQLSTATE; ``detail`` and ``hint`` keep the rest, and the driver's error is ``__cause__``.
    """
    if isinstance(exc, sa_exc.TimeoutError):
        return DatabaseUnavailableError(
            "no database connection came free within the pool's timeout: every pooled "
            "connection is busy; raise pool_size / max_overflow (engine_options), or send "
            "fewer requests at once"
        )
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
    if sqlstate == _TOO_LONG and "tsvector" in first:
        # Content under the client's byte limit can still analyse into a larger tsvector
        # (many short distinct words). The server's context names the COPY line.
        where = (getattr(diag, "context", None) or "").strip().splitlines()
        return InvalidInputError(
            f"a chunk's text is too long for keyword search: {first}"
            f"{' (' + where[-1] + ')' if where else ''}; nothing of the batch was written. "
            "Split it into smaller chunks"
        )
    if sqlstate == _TOO_COMPLEX:
        return InvalidInputError(
            f"the statement is too complex for the server: {first}; shorten the query text "
            "or the filter"
        )
    if sqlstate == _UNDEFINED_COLUMN:
        # Our statements name only columns our migrations make: the table is older.
        return SchemaError(
            f"{first}{code}; the collection was set up by an older rag_pgstore: run setup() "
            "once with this version to upgrade it"
        )
    if sqlstate == "42P01":
        return CollectionNotFoundError(
            f"{first}; the collection does not exist (any more): create it with store.setup()"
        )
    if sqlstate == _CANCELED:
        return QueryTimeoutError(
            f"query cancelled: {first}{code}; nothing was changed, and the store is still "
            "usable. A statement timeout can be raised, or the query narrowed",
            **extra,
        )
    gone = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    if (
        gone
        or (
            isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError))
            and sqlstate is None
        )
        or (sqlstate or "")[:2] in _UNAVAILABLE_CLASSES
    ):
        return DatabaseUnavailableError(f"database unavailable: {first}{code}", **extra)
    return DatabaseError(f"{first}{code}", **extra)


# -- which form of a Read ----------------------------------------------------------------------

HINT_SECONDS = 60.0  # how long an answer about a table's ANN index is trusted
# Whether each (database, schema, table) has an ANN index, and when that was last asked.
_HINTS: dict[tuple[str, str, str], tuple[float, bool]] = {}
SESSION_KEY = "rag_pgstore.session"  # in a pooled connection's info: the settings it has


_DATABASES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def database(engine: Any) -> str:
    """Which database ``engine`` reaches, the same for a store's sync and async engines.

    The driver name is left out (``postgresql+psycopg_async`` and ``postgresql+psycopg`` reach
    one database), and so is the password. Computed once per engine.
    """
    known = _DATABASES.get(engine)
    if known is None:
        url = engine.url.set(drivername="postgresql")
        known = _DATABASES[engine] = url.render_as_string(hide_password=True)
    return known


def _key(database: str, form: IndexedForm | Forget) -> tuple[str, str, str]:
    return (database, form.schema, form.table)


def stale(database: str, step: Read) -> IndexedForm | None:
    """The indexed form whose table must be asked about now, if any."""
    indexed = step.indexed
    if indexed is None:
        return None
    seen = _HINTS.get(_key(database, indexed))
    return indexed if seen is None or time.monotonic() - seen[0] > HINT_SECONDS else None


def hint(database: str, schema: str, table: str) -> bool | None:
    """What the drivers believe of ``schema.table``'s ANN index (``None``: not asked yet)."""
    seen = _HINTS.get((database, schema, table))
    return None if seen is None else seen[1]


def remember(database: str, indexed: IndexedForm, has_index: bool) -> None:
    _HINTS[_key(database, indexed)] = (time.monotonic(), has_index)


def forget(database: str, step: Forget) -> None:
    """A plan changed the table's indexes: ask again before the next Read."""
    _HINTS.pop(_key(database, step), None)


def form(database: str, step: Read) -> str:
    """The SQL to send: the indexed form when the table has an ANN index."""
    indexed = step.indexed
    if indexed is None:
        return step.sql
    seen = _HINTS.get(_key(database, indexed))
    return indexed.sql if seen is not None and seen[1] else step.sql


def unset(step: Read, known: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The step's session settings, unless the connection has them all already."""
    if all(known.get(name) == value for name, value in step.settings):
        return ()
    return step.settings
