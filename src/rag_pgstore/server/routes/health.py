"""``/healthz`` (the process answers), ``/readyz`` (the database answers and the schema is
current) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rag_pgstore import driver
from rag_pgstore.ops import registry
from rag_pgstore.schema import SCHEMA_VERSION
from rag_pgstore.server import schemas as s
from rag_pgstore.server.auth import can_read
from rag_pgstore.server.errors import ApiError
from rag_pgstore.server.routes.common import collections, metrics, settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> s.Health:
    """Up: the process answers (it does not ask the database)."""
    return s.Health(status="ok")


@router.get("/readyz", responses={503: {"description": "the database is down or behind"}})
async def readyz(request: Request) -> s.Ready:
    """Ready: the database answers, and the default collection (if it exists) has the
    schema this version writes."""
    cols = collections(request)
    name = settings(request).collection
    row = await driver.run_async(cols.engine, lambda: registry.registered(cols.schema, name))
    version = None if row is None else int(row["schema_version"])
    if version is not None and version != SCHEMA_VERSION:
        raise ApiError(
            503,
            "schema_outdated",
            f"collection {name!r} has schema version {version}, this server writes "
            f"{SCHEMA_VERSION}: upgrade it once with ChunkStore.setup() (or `rag-pgstore ingest`)",
            headers={"Retry-After": "30"},
        )
    return s.Ready(status="ready", collection=name, schema_version=version)


@router.get("/metrics", dependencies=[can_read], response_class=Response)
async def metrics_text(request: Request) -> Response:
    """Every metric, in Prometheus text format."""
    return Response(generate_latest(metrics(request).registry), media_type=CONTENT_TYPE_LATEST)
