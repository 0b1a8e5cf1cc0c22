"""One fixture resolves the test database; everything else builds on it.

Order: ``RAG_PGSTORE_TEST_DATABASE_URL`` (any PostgreSQL with pgvector), else a
``pgvector/pgvector`` container when a Docker engine answers, else the embedded server in a
fresh temporary directory. The report header says which one ran, with its versions.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import ChunkStore, Distance
from rag_pgstore.connect import make_engines
from rag_pgstore.testing import TestDatabase as Database
from rag_pgstore.testing import database_for_tests

PG = postgresql.dialect()  # type: ignore[no-untyped-call]  # compiles statements without a database


_stack = ExitStack()
_database: Database | None = None
_versions: list[str] = []


def database() -> Database:
    global _database
    if _database is None:
        _database = _stack.enter_context(database_for_tests())
        engine = sa.create_engine(_database.url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            _versions.append(conn.execute(sa.text("SHOW server_version")).scalar_one())
            _versions.append(
                conn.execute(
                    sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                ).scalar_one()
            )
        engine.dispose()
    return _database


_DATABASE_FIXTURES = frozenset({"db", "engines", "make_store"})


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: object, items: list[pytest.Item]
) -> list[str]:
    """Which database the run uses, under the collection line; started only if a test needs it.

    Tests that need no database (statement compilation, the chunker's properties) run
    without one.
    """
    if not any(_DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())) for item in items):
        return ["database: none needed by the selected tests"]
    db = database()
    return [
        f"database: {db.source} ({db.url.render_as_string(hide_password=True)})",
        f"postgres {_versions[0]}, pgvector {_versions[1]}",
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _stack.close()


@pytest.fixture(scope="session")
def db() -> Database:
    return database()


@pytest.fixture(scope="session")
async def engines(db: Database) -> AsyncIterator[tuple[Engine, AsyncEngine]]:
    engine, async_engine = make_engines(db.url)
    yield engine, async_engine
    engine.dispose()
    await async_engine.dispose()


_names = itertools.count()


@pytest.fixture
def collection_name() -> str:
    """A collection name no other test uses."""
    return f"t{os.getpid()}_{next(_names)}"


StoreFactory = Callable[..., ChunkStore]


@pytest.fixture
def make_store(engines: tuple[Engine, AsyncEngine], collection_name: str) -> StoreFactory:
    """Build (and set up) a store on the test database; extra stores get fresh names."""
    counter = itertools.count()

    def make(*, setup: bool = True, name: str | None = None, **options: Any) -> ChunkStore:
        options.setdefault("dim", 3)
        store = ChunkStore(
            engines[0],
            engines[1],
            collection=name or f"{collection_name}_{next(counter)}",
            **options,
        )
        if setup:
            store.setup()
        return store

    return make


@pytest.fixture(params=list(Distance), ids=[d.value for d in Distance])
def distance(request: pytest.FixtureRequest) -> Distance:
    return request.param  # type: ignore[no-any-return]


# Async names that are not the sync name with an "a" in front (LlamaIndex's vector store).
_ASYNC_NAMES = {"add": "async_add"}


class Api:
    """Call a method through its sync or async form, so one test body covers both.

    Works for the store and for both adapters: ``await api(store, "search", ...)``.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def __call__(self, target: object, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return getattr(target, method)(*args, **kwargs)
        name = _ASYNC_NAMES.get(method, "a" + method)
        result: Awaitable[Any] = getattr(target, name)(*args, **kwargs)
        return await result

    def __repr__(self) -> str:
        return self.mode


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Api:
    return Api(request.param)


def waiting_on_a_lock(conn: sa.Connection) -> bool:
    """Whether any session of ``conn``'s database is waiting for a lock right now."""
    waits = (
        sa.select(sa.func.count())
        .select_from(sa.table("pg_stat_activity"))
        .where(
            sa.column("wait_event_type") == "Lock",
            sa.column("datname") == sa.func.current_database(),
        )
    )
    with conn.engine.connect() as probe:
        return bool(probe.execute(waits).scalar_one())
