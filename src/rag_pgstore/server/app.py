"""Build the ASGI app: the routes, the error shape, keys, limits, metrics and the page.

:func:`create_app` does no I/O: the database is connected when the app starts (its
lifespan) and the pool is closed when it stops, after uvicorn has let in-flight requests
finish.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata, resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from rag_pgstore import embedded
from rag_pgstore.connect import make_async_engine
from rag_pgstore.server import errors
from rag_pgstore.server.metrics import Metrics
from rag_pgstore.server.middleware import BodyLimit, KeyGate, LocalOnly, Observe
from rag_pgstore.server.routes import chunks, collections, documents, health, search
from rag_pgstore.server.settings import Keys, ServerSettings
from rag_pgstore.server.state import Collections

__all__ = ["create_app"]

CONNECT_TIMEOUT = 10  # seconds; a database that does not answer fails the request, not hangs


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The HTTP API over a database's collections (run it with uvicorn, or
    ``rag-pgstore serve``).

    >>> app = create_app(ServerSettings(database_url=os.environ["DATABASE_URL"],
    ...                                 embedder="hash:256", keys=(ApiKey(secret, "write"),)))
    """
    settings = settings or ServerSettings()
    engine_ref: dict[str, Any] = {}
    metrics = Metrics(lambda: engine_ref["engine"].pool if engine_ref else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_url
        if url is None:
            url = (await asyncio.to_thread(embedded.start, settings.data_dir)).url
        engine = make_async_engine(
            url,
            {
                "pool_size": settings.pool_size,
                "max_overflow": settings.max_overflow,
                "pool_timeout": settings.pool_timeout,
                "connect_args": {"connect_timeout": CONNECT_TIMEOUT},
            },
        )
        engine_ref["engine"] = engine
        app.state.collections = Collections(
            engine,
            schema=settings.schema,
            default_embedder=settings.embedder,
            metrics=metrics,
            embed_threads=settings.embed_threads,
            create_extension=settings.create_extension,
        )
        try:
            yield
        finally:
            engine_ref.clear()
            await engine.dispose()

    app = FastAPIOffline(
        title="rag-pgstore",
        version=_version(),
        summary="Chunks of a RAG system in PostgreSQL + pgvector: write, search, ingest.",
        lifespan=lifespan,
        redoc_url=None,
        static_url="/_docs",
    )
    app.state.settings = settings
    app.state.keys = Keys(settings.keys)
    app.state.metrics = metrics
    errors.install(app)
    for module in (health, collections, chunks, documents, search):
        app.include_router(module.router)
    _page(app, settings)
    # The last added runs first: every request is observed, even one a gate refuses.
    app.add_middleware(BodyLimit, limit=settings.limits.max_body_bytes)
    if settings.keys:
        app.add_middleware(KeyGate, keys=app.state.keys)
    else:
        app.add_middleware(LocalOnly)
    app.add_middleware(Observe, metrics=metrics)
    return app


def _page(app: FastAPI, settings: ServerSettings) -> None:
    """The search page at ``/``: plain HTML and a script, served from the package."""
    page = resources.files("rag_pgstore.server") / "page"
    index = (page / "index.html").read_text(encoding="utf-8")
    index = index.replace("{{collection}}", html.escape(settings.collection, quote=True))

    @app.get("/", include_in_schema=False)
    async def search_page() -> HTMLResponse:
        return HTMLResponse(index, headers=_PAGE_HEADERS)

    app.mount("/page", StaticFiles(packages=[("rag_pgstore.server", "page")]), name="page")


# The page runs its own script and style only: no inline code, no framing, no referrer.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _version() -> str:
    try:
        return metadata.version("rag-pgstore")
    except metadata.PackageNotFoundError:
        return "0"
