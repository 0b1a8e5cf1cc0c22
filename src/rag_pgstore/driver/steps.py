"""What a plan may ask of a driver: the steps, and the plan type itself.

Every operation of the store (``ops/``) is a generator that yields steps and receives their
results. It never touches a connection, so one generator serves the sync and the async API;
the drivers (``driver/aio.py`` and the ``driver/sync.py`` generated from it) carry the steps
out.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg import sql
from sqlalchemy.sql.base import Executable

__all__ = [
    "Copy",
    "Execute",
    "Fetch",
    "Forget",
    "IndexedForm",
    "Plan",
    "PlanSource",
    "Pull",
    "Read",
    "Step",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Fetch:
    """Execute a statement and reply with all its rows.

    ``params`` fill the statement's named ``bindparam``s: a statement built once and run with
    new values skips SQLAlchemy's construction and compilation (see ``sql/bm25.py``).

    ``unprepared``: the server plans the statement for its values every time it runs. psycopg
    prepares a statement run five times on a connection, and PostgreSQL may then keep one
    generic plan for it, which can be wrong for later values: the write path's existence check,
    first planned on an empty table, would stay a sequential scan while its transaction fills
    the table. Its parameters go to psycopg as they are, without SQLAlchemy's bind processing:
    for plain values (text, numbers, arrays of them), not JSONB or enum types.
    """

    statement: Executable
    params: Mapping[str, Any] | None = None
    unprepared: bool = False


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


@dataclass(frozen=True)
class IndexedForm:
    """The same query as a :class:`Read`'s, in the form an ANN index on ``schema.table`` serves.

    Both forms return the same rows; the driver picks the one that is faster for the table as
    it is (and so may be briefly wrong, costing time, never correctness).
    """

    sql: str
    schema: str
    table: str


@dataclass(frozen=True)
class Read:
    """A plan's only step: one compiled query, run outside a transaction in one round trip.

    Replies with the rows as dicts. ``sql`` comes from a SQLAlchemy statement compiled for the
    psycopg dialect (``sql.search.nearest_read``), never from strings. ``settings`` are session
    settings the query needs (``hnsw.ef_search``); the driver sets each only when the pooled
    connection does not have it yet.
    """

    sql: str
    params: Mapping[str, Any]
    settings: tuple[tuple[str, str], ...] = ()
    indexed: IndexedForm | None = None


@dataclass(frozen=True)
class Forget:
    """The plan changed ``schema.table``'s indexes: the driver forgets what it knew of them."""

    schema: str
    table: str


Step = Fetch | Execute | Copy | Pull | Read | Forget
Plan = Generator[Step, Any, T]
# A plan, or a function that builds one: a transaction PostgreSQL aborts to break a deadlock
# can then be run again from a fresh plan.
PlanSource = Plan[T] | Callable[[], Plan[T]]
