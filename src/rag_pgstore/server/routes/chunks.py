"""``/v1/collections/{name}/chunks``: upsert, get, delete, count, and "more like this".

Chunk ids travel in paths URL-encoded (``doc.md%233`` for ``doc.md#3``); any id, slashes
included, can also be sent in a body to ``chunks/get``.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request

from rag_pgstore.server import schemas as s
from rag_pgstore.server.auth import can_read, can_write
from rag_pgstore.server.errors import ApiError
from rag_pgstore.server.routes.common import (
    check_batch,
    check_k,
    collections,
    metrics,
    settings,
    tenant_of,
)
from rag_pgstore.server.state import claimed_upsert
from rag_pgstore.types import Chunk

router = APIRouter(prefix="/v1/collections/{name}", tags=["chunks"])


@router.post("/chunks", dependencies=[can_write])
async def upsert_chunks(name: str, body: s.Upsert, request: Request) -> s.Written:
    """Insert or replace chunks by id, all or none. Chunks without an ``embedding`` are
    embedded by the server with the collection's model."""
    cols = collections(request)
    check_batch(settings(request).limits, len(body.chunks), "chunks")
    opened = await cols.get_for(name, tenant_of(request))
    c = opened.store.collection
    to_embed = [i for i, chunk in enumerate(body.chunks) if chunk.embedding is None]
    vectors: dict[int, list[float]] = {}
    claim = None
    if to_embed:
        model = cols.model_for(opened, writing=True)
        texts = [body.chunks[i].content for i in to_embed]
        vectors = dict(zip(to_embed, await cols.embed(model, texts, c.dim), strict=True))
        claim = model.name if opened.embedder is None else None
    chunks = [
        Chunk(
            chunk_id=chunk.chunk_id,
            content=chunk.content,
            embedding=chunk.embedding if chunk.embedding is not None else vectors[i],
            entity_id=chunk.entity_id,
            chunk_index=chunk.chunk_index,
            total_chunks=chunk.total_chunks,
            metadata=chunk.metadata,
        )
        for i, chunk in enumerate(body.chunks)
    ]
    written = await opened.store.arun_plan(claimed_upsert(c, claim, chunks))
    if claim is not None:
        opened.embedder = claim
    metrics(request).rows_written.labels("upsert").inc(written)
    return s.Written(written=written, embedded=len(to_embed))


@router.post("/chunks/get", dependencies=[can_read])
async def get_chunks(name: str, body: s.Ids, request: Request) -> s.ChunkList:
    """Chunks by id (missing ids are left out), by document and position."""
    check_batch(settings(request).limits, len(body.ids), "ids")
    opened = await collections(request).get_for(name, tenant_of(request))
    found = await opened.store.aget(body.ids, with_embeddings=body.with_embeddings)
    return s.ChunkList(chunks=[s.ChunkOut.of(c) for c in found])


@router.post("/chunks/delete", dependencies=[can_write])
async def delete_chunks(name: str, body: s.Delete, request: Request) -> s.Deleted:
    """Delete chunks by id, by document (``entity_ids``) or by metadata filter."""
    opened = await collections(request).get_for(name, tenant_of(request))
    store = opened.store
    if body.ids is not None:
        check_batch(settings(request).limits, len(body.ids), "ids")
        deleted, how = await store.adelete(body.ids), "ids"
    elif body.entity_ids is not None:
        check_batch(settings(request).limits, len(body.entity_ids), "entity ids")
        deleted, how = await store.adelete_entities(body.entity_ids), "entities"
    else:
        assert body.filter is not None
        deleted, how = await store.adelete_where(body.filter), "filter"
    metrics(request).rows_deleted.labels(how).inc(deleted)
    return s.Deleted(deleted=deleted)


@router.post("/count", dependencies=[can_read])
async def count_chunks(name: str, body: s.Count, request: Request) -> s.Counted:
    """How many chunks match ``filter`` (all of them without one)."""
    opened = await collections(request).get_for(name, tenant_of(request))
    return s.Counted(count=await opened.store.acount(body.filter))


@router.get("/chunks/{chunk_id:path}/similar", dependencies=[can_read])
async def similar_chunks(
    name: str,
    chunk_id: str,
    request: Request,
    k: int = Query(4, ge=1),
    min_score: float | None = Query(None),
) -> s.Results:
    """More like this: the ``k`` chunks nearest to a stored chunk, without it."""
    check_k(settings(request).limits, k)
    opened = await collections(request).get_for(name, tenant_of(request))
    start = time.perf_counter()
    hits = await opened.store.asearch_like(chunk_id, k=k)
    metrics(request).search_seconds.labels("similar").observe(time.perf_counter() - start)
    if not hits and not await opened.store.aget([chunk_id]):
        raise _no_chunk(chunk_id, name)
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return s.Results(kind="similar", results=[s.Hit.of(h) for h in hits], embedded_query=False)


@router.get("/chunks/{chunk_id:path}", dependencies=[can_read])
async def get_chunk(
    name: str, chunk_id: str, request: Request, with_embedding: bool = False
) -> s.ChunkOut:
    """One chunk by id."""
    opened = await collections(request).get_for(name, tenant_of(request))
    found = await opened.store.aget([chunk_id], with_embeddings=with_embedding)
    if not found:
        raise _no_chunk(chunk_id, name)
    return s.ChunkOut.of(found[0])


@router.delete("/chunks/{chunk_id:path}", dependencies=[can_write])
async def delete_chunk(name: str, chunk_id: str, request: Request) -> s.Deleted:
    """Delete one chunk by id (``deleted`` is 0 if there was none)."""
    opened = await collections(request).get_for(name, tenant_of(request))
    deleted = await opened.store.adelete([chunk_id])
    metrics(request).rows_deleted.labels("ids").inc(deleted)
    return s.Deleted(deleted=deleted)


def _no_chunk(chunk_id: str, collection: str) -> ApiError:
    return ApiError(404, "chunk_not_found", f"no chunk {chunk_id!r} in collection {collection!r}")
