"""Run an app under a real uvicorn on a free localhost port, in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from rag_pgstore.server import ServerSettings, create_app
from rag_pgstore.testing import TestDatabase

READ_KEY = "read-key-0123456789abcdef"
WRITE_KEY = "write-key-0123456789abcdef"
ACME_KEY = "acme-key-0123456789abcdef"  # write@acme
GLOBEX_KEY = "globex-key-0123456789abcdef"  # read@globex


def settings_for(db: TestDatabase, **options: Any) -> ServerSettings:
    from rag_pgstore.server import ApiKey, Scope

    options.setdefault("embedder", "hash:32")
    options.setdefault(
        "keys",
        (
            ApiKey(READ_KEY, Scope.READ),
            ApiKey(WRITE_KEY, Scope.WRITE),
            ApiKey.parse(f"write@acme:{ACME_KEY}"),
            ApiKey.parse(f"read@globex:{GLOBEX_KEY}"),
        ),
    )
    return ServerSettings(database_url=db.url, **options)


@contextmanager
def serving(settings: ServerSettings) -> Iterator[str]:
    """Serve ``create_app(settings)`` until the block ends; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
