"""``/v1/collections/{name}/documents``: whole documents, chunked, embedded and stored.

The same pipeline as ``rag-pgstore ingest``: each document is cut by the tiktoken chunker,
compared with what the collection holds, and only new or changed chunks are embedded (or
taken from the embedding cache); a document's old chunks that it no longer has are deleted.
One request is one batch, written in one transaction: all its documents or none.
"""

from __future__ import annotations

import sys

from fastapi import APIRouter, Request

from rag_pgstore.chunking import TokenChunker
from rag_pgstore.errors import DimensionError
from rag_pgstore.pipeline import Document, Pipeline
from rag_pgstore.pipeline.embedders import Embedder
from rag_pgstore.server import schemas as s
from rag_pgstore.server.auth import can_write
from rag_pgstore.server.routes.common import check_batch, collections, metrics, settings, tenant_of

router = APIRouter(prefix="/v1/collections/{name}", tags=["documents"])


@router.post("/documents", dependencies=[can_write])
async def ingest_documents(name: str, body: s.Ingest, request: Request) -> s.Ingested:
    """Ingest whole documents, incrementally by content hash: an unchanged document costs one
    read; a changed one is re-chunked and only its changed chunks are embedded."""
    cols = collections(request)
    check_batch(settings(request).limits, len(body.documents), "documents")
    opened = await cols.get_for(name, tenant_of(request))
    model = cols.model_for(opened, writing=True)
    dim = opened.store.collection.dim
    made = await cols.dim_of(model)
    if made != dim:
        # Checked before the pipeline records the model (its first, own transaction).
        raise DimensionError(
            f"expected a model making {dim} dimensions for collection {name!r}, got "
            f"{model.name!r} making {made}: send documents to a collection made for it"
        )

    async def embed(texts: list[str]) -> list[list[float]]:
        return await cols.embed(model, texts, dim)

    pipeline = Pipeline(
        opened.store,
        Embedder(model.name, model.embed, embed),  # through the server's limiter and metrics
        chunker=TokenChunker(max_tokens=body.max_tokens, overlap=body.overlap),
        # One batch, so one transaction: the request's documents commit together or not at all.
        batch_documents=max(1, len(body.documents)),
        batch_chunks=sys.maxsize,
        retries=1,
    )
    report = await pipeline.aingest([Document(d.id, d.text, d.metadata) for d in body.documents])
    opened.embedder = model.name  # the pipeline recorded it, if it was not yet
    metrics(request).rows_written.labels("ingest").inc(report.chunks_written)
    metrics(request).rows_deleted.labels("ingest").inc(report.chunks_deleted)
    return s.Ingested.of(report)
