"""The server a search benchmark runs on, sized as a production server would be.

With ``$DATABASE_URL`` the benchmark uses that server as it is configured. Without it, an
embedded server in a data folder of the benchmark's own, with ``shared_buffers`` set (by
default to a quarter of the machine's memory, PostgreSQL's own tuning advice and what managed
services such as RDS start from). The embedded server's out-of-the-box 128 MB holds a 25k-row
collection but not a 200k-row one with its indexes (about 450 MB), so without this a corpus
size would be timed partly on the OS page cache, partly on shared buffers: a difference of
configuration, not of the search. The page states the setting, and the keyword benchmark
times its largest size at 128 MB too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg
from psycopg import sql

from rag_pgstore import embedded

__all__ = ["BenchServer", "quarter_of_memory", "start"]

OUT_OF_THE_BOX = "128MB"  # what initdb writes, and what the embedded server runs with


def quarter_of_memory() -> str:
    """A quarter of the machine's physical memory, in PostgreSQL's units (MB)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{total // 4 // 2**20}MB"


@dataclass
class BenchServer:
    """Where the benchmark connects (``url``: ``None`` is never passed on) and, for a server
    of its own, how to restart it with other ``shared_buffers``."""

    url: str
    dedicated: embedded.EmbeddedPostgres | None

    def shared_buffers(self) -> str:
        with psycopg.connect(self._dsn()) as conn:
            row = conn.execute("SHOW shared_buffers").fetchone()
        assert row is not None
        return str(row[0])

    def resize(self, shared_buffers: str) -> None:
        """Restart the benchmark's own server with ``shared_buffers`` (a server given by
        ``$DATABASE_URL`` is left as it is configured)."""
        if self.dedicated is None:
            return
        with psycopg.connect(self._dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(shared_buffers))
            )
        self.dedicated.stop()
        self.dedicated = embedded.start(self.dedicated.data_dir)

    def _dsn(self) -> str:
        return self.url.replace("+psycopg", "")


def start(shared_buffers: str) -> BenchServer:
    """``$DATABASE_URL`` as it is, else the benchmark's own embedded server with
    ``shared_buffers``."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return BenchServer(url=url, dedicated=None)
    folder = embedded.default_data_dir().parent / "benchmark-pg"
    server = embedded.start(folder)
    bench = BenchServer(url=server.url.render_as_string(hide_password=False), dedicated=server)
    bench.resize(shared_buffers)
    return bench
