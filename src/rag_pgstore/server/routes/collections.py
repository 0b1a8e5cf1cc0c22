"""``/v1/collections``: list, create, describe, drop."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from rag_pgstore import driver
from rag_pgstore.errors import DimensionError, InvalidInputError
from rag_pgstore.ops import registry
from rag_pgstore.pipeline.embedders import embedder_dim
from rag_pgstore.server import schemas as s
from rag_pgstore.server.auth import can_manage, can_see_all
from rag_pgstore.server.routes.common import collections

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.get("", dependencies=[can_see_all])
async def list_collections(request: Request) -> s.CollectionList:
    """Every collection in the server's schema, with counts and settings."""
    cols = collections(request)
    found = await driver.run_async(cols.engine, lambda: registry.collections(cols.schema))
    return s.CollectionList(collections=[s.CollectionOut.of(c) for c in found])


@router.post(
    "",
    status_code=201,
    dependencies=[can_manage],
    responses={200: {"description": "it existed already, with these settings"}},
)
async def create_collection(
    body: s.CreateCollection, request: Request, response: Response
) -> s.CollectionDetail:
    """Create a collection (201), or find it made with the same settings (200)."""
    cols = collections(request)
    model_dim = None
    if body.embedder is not None:
        model_dim = embedder_dim(body.embedder)
    elif cols.default is not None:
        model_dim = await cols.dim_of(cols.default)
    dim = body.dim or model_dim
    if dim is None:
        raise InvalidInputError(
            "expected dim: the server has no embedding model whose dimension it could use"
        )
    if body.embedder is not None and model_dim is not None and model_dim != dim:
        raise DimensionError(
            f"expected dim {model_dim} for embedder {body.embedder!r}, got dim {dim}"
        )
    opened, created = await cols.create(
        body.name,
        dim=dim,
        embedder=body.embedder,
        distance=body.distance,
        keyword=body.keyword,
        text_config=body.text_config,
        tenancy=body.tenancy,
    )
    response.status_code = 201 if created else 200
    return s.CollectionDetail.of_info(await opened.store.adescribe())


@router.get("/{name}", dependencies=[can_see_all])
async def describe_collection(name: str, request: Request) -> s.CollectionDetail:
    """Counts, settings, indexes, schema version, and whether searches use the ANN index."""
    opened = await collections(request).get(name)
    return s.CollectionDetail.of_info(await opened.store.adescribe())


@router.delete("/{name}", status_code=204, dependencies=[can_manage])
async def drop_collection(name: str, request: Request) -> Response:
    """Drop the collection and every chunk in it."""
    cols = collections(request)
    opened = await cols.get(name)
    try:
        await opened.store.adrop()
    finally:
        cols.forget(name)
    return Response(status_code=204)
